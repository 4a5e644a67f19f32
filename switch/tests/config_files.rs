//! Configuration loading against real files: the seed's annotated iax.conf, the
//! same with every option uncommented, the seed's "IAX2 Trunk" example, one test
//! per kind of error, and random input that must never panic.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use switch::config::options::{self, Support};
use switch::config::*;

const SEED: &str = include_str!("data/seed-iax.conf");
const SEED_ALL: &str = include_str!("data/seed-iax-all-options.conf");

fn data_dir(sub: &str) -> DirLoader {
    DirLoader(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(sub))
}

fn load_iax(text: &str) -> Result<LoadedConfig, Vec<Diagnostic>> {
    load(&MapLoader::from_files([("iax.conf", text)]))
}

fn must_load(text: &str) -> LoadedConfig {
    match load_iax(text) {
        Ok(c) => c,
        Err(errors) => panic!("expected to load, got:\n{}", render(&errors)),
    }
}

fn must_fail(loader: &MapLoader) -> Vec<Diagnostic> {
    match load(loader) {
        Ok(c) => panic!("expected errors, loaded {c:?}"),
        Err(errors) => errors,
    }
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}\n")).collect()
}

/// The 1-based line of the first line of `text` that, comments stripped, sets
/// `key` (`key = ...` or `key => ...`) and satisfies `also`.
fn line_of(text: &str, key: &str, also: impl Fn(&str) -> bool) -> u32 {
    for (i, line) in text.lines().enumerate() {
        let code = line.split(';').next().unwrap_or("").trim();
        if let Some((k, v)) = code.split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) && also(v) {
                return (i + 1) as u32;
            }
        }
    }
    panic!("{key} not found");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn peer<'a>(c: &'a LoadedConfig, name: &str) -> &'a PeerConfig {
    c.iax.peers.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no peer {name}"))
}

// ---------------------------------------------------------------------------------
// The seed document
// ---------------------------------------------------------------------------------

#[test]
fn seed_iax_conf_loads() {
    let c = must_load(SEED);
    let g = &c.iax.general;
    assert_eq!(g.bind, SocketAddr::from(([127, 0, 0, 1], 4569)), "no bindaddr: loopback, not Asterisk's 0.0.0.0");
    assert!(!g.jitterbuffer);
    assert_eq!(g.autokill, Some(Duration::from_millis(2000)));
    // bandwidth=low drops ulaw/alaw exactly as chan_iax2 does; disallow=lpc10 changes nothing more.
    assert_eq!(g.codecs.allowed, ["gsm"]);
    assert!(c.iax.registrations.is_empty());
    let names: Vec<&str> = c.iax.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["guest", "iaxtel", "iaxfwd"]);
    let guest = peer(&c, "guest");
    assert_eq!(guest.kind, PeerKind::User);
    assert_eq!(guest.context, "public");
    assert_eq!(guest.callerid_name.as_deref(), Some("Guest IAX User"));
    assert!(guest.secrets.is_empty());
    let iaxtel = peer(&c, "iaxtel");
    assert_eq!(iaxtel.auth, AuthMethods { plaintext: false, md5: false, rsa: true });
    // inkeys (unsupported) and auth=rsa (unsupported method): one note each, at their first line.
    let notes: Vec<(u32, &str)> = c.notes.iter().map(|n| (n.location.line, n.key.as_deref().unwrap_or(""))).collect();
    assert_eq!(
        notes,
        [(line_of(SEED, "auth", |v| v.contains("rsa")), "auth"), (line_of(SEED, "inkeys", |_| true), "inkeys")]
    );
    assert_eq!(c.notes[1].location.file, "iax.conf");
    assert!(c.notes[1].message.contains("recognised but not supported by this switch; it has no effect"));
    assert!(c.notes[1].hint.contains(&format!("also at iax.conf:{}", line_of(SEED, "inkeys", |v| v.contains("free")))));
}

/// The options the seed's annotated iax.conf mentions that this switch does not act on.
const SEED_UNSUPPORTED: &[&str] = &[
    "iaxcompat",
    "nochecksums",
    "amaflags",
    "adsi",
    "srvlookup",
    "accountcode",
    "mohinterpret",
    "mohsuggest",
    "iaxthreadcount",
    "iaxmaxthreadcount",
    "subscribe_network_change_event",
    "tos",
    "cos",
    "regcontext",
    "allowfwdownload",
    "rtcachefriends",
    "rtsavesysname",
    "rtupdate",
    "rtautoclear",
    "rtignoreregexpire",
    "parkinglot",
    "shrinkcallerid",
    "setvar",
    "dbsecret",
    "transfer",
    "keyrotate",
    "sendani",
    "mask",
    "connectedline",
    "mailbox",
    "inkeys",
    "peercontext",
    "timezone",
    "regexten",
    "acl",
    "immediate",
];

#[test]
fn seed_with_every_option_uncommented_loads_with_one_note_per_unsupported_option() {
    let c = must_load(SEED_ALL);
    let mut expected: Vec<(u32, String)> =
        SEED_UNSUPPORTED.iter().map(|k| (line_of(SEED_ALL, k, |_| true), k.to_string())).collect();
    expected.push((line_of(SEED_ALL, "auth", |v| v.contains("rsa")), "auth".into()));
    expected.push((line_of(SEED_ALL, "register", |v| v.contains("[torkey]")), "register".into()));
    expected.sort();
    let got: Vec<(u32, String)> =
        c.notes.iter().map(|n| (n.location.line, n.key.clone().unwrap_or_default().to_ascii_lowercase())).collect();
    assert_eq!(got, expected, "notes:\n{}", render(&c.notes));
    for n in &c.notes {
        assert_eq!(n.location.file, "iax.conf");
    }
    // The table agrees with the list above, and knows every option the seed names.
    for name in SEED_UNSUPPORTED {
        assert_eq!(options::lookup(name).map(|o| o.support), Some(Support::Unsupported), "{name}");
    }

    let g = &c.iax.general;
    assert_eq!(g.bind, "192.168.0.1:4569".parse::<SocketAddr>().unwrap());
    assert!(g.delayreject && g.authdebug && g.trunktimestamps && g.encryption && g.forceencryption);
    assert_eq!(g.language.as_deref(), Some("en"));
    assert_eq!((g.trunkmaxsize, g.trunkmtu, g.trunkfreq), (128_000, 1240, Duration::from_millis(20)));
    assert_eq!((g.minregexpire, g.maxregexpire), (60, 60));
    assert_eq!(g.calltokenoptional, [IpNet { addr: ip("209.16.236.0"), prefix: 24 }]);
    assert_eq!(g.defaults.requirecalltoken, CallTokenRequirement::No);
    assert_eq!(g.calltokenexpiration, Duration::from_secs(10));
    assert_eq!((g.maxcallnumbers, g.maxcallnumbers_nonvalidated), (512, 1024));
    assert_eq!(g.codecpriority, CodecPriority::Host);
    assert_eq!(
        c.iax.callnumberlimits,
        [(IpNet { addr: ip("10.1.1.0"), prefix: 24 }, 24), (IpNet { addr: ip("10.1.2.0"), prefix: 24 }, 32)]
    );
    // In file order: bandwidth=low leaves [gsm]; allow=all appends every other codec in
    // Asterisk's order; disallow=g723.1 and disallow=lpc10 remove those; allow=gsm is already there.
    let mut want = vec!["gsm"];
    want.extend(options::CODECS.iter().map(|(n, _)| *n).filter(|n| !["gsm", "g723", "lpc10"].contains(n)));
    assert_eq!(g.codecs.allowed, want);
    // Four registrations: the RSA one is noted and skipped.
    let regs: Vec<(&str, Option<&str>, &str, u16)> = c
        .iax
        .registrations
        .iter()
        .map(|r| (r.username.as_str(), r.secret.as_deref(), r.host.as_str(), r.port))
        .collect();
    assert_eq!(
        regs,
        [
            ("marko", Some("secretpass"), "tormenta.linux-support.net", 4569),
            ("joe", None, "remotehost", 5656),
            ("user", Some("pass"), "iaxtel.com", 4569),
            ("FWDNumber", Some("passwd"), "iax.fwdnet.net", 4569),
        ]
    );

    let names: Vec<&str> = c.iax.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["guest", "markster", "demo", "dynamichost", "biggateway", "marko", "manual", "iaxtel", "iaxfwd", "dundi"]
    );
    let markster = peer(&c, "markster");
    assert_eq!(markster.contexts, ["default", "local"]);
    assert_eq!(markster.context, "default");
    assert_eq!(markster.auth, AuthMethods { plaintext: true, md5: true, rsa: true });
    assert_eq!(markster.secrets, ["markpasswd"]);
    assert_eq!(markster.jitterbuffer, Some(true));
    assert_eq!(
        (markster.callerid_name.as_deref(), markster.callerid_number.as_deref()),
        (Some("Mark Spencer"), Some("(256) 428-6275"))
    );
    assert!(!markster.acl.permits(ip("192.0.2.1")));
    assert!(markster.acl.permits(ip("209.16.236.200")));
    let demo = peer(&c, "demo");
    assert_eq!(demo.kind, PeerKind::Peer);
    assert_eq!(demo.host, Host::Static("asterisk.linux-support.net".into()));
    assert_eq!(demo.port, 5036);
    assert_eq!(demo.username.as_deref(), Some("asterisk"));
    assert_eq!(demo.description.as_deref(), Some("My IAX2 Peer"));
    assert_eq!(demo.qualify, Qualify::MaxMs(2000));
    assert!(demo.qualifysmoothing);
    assert_eq!((demo.qualifyfreqok, demo.qualifyfreqnotok), (Duration::from_secs(60), Duration::from_secs(10)));
    assert_eq!(demo.jitterbuffer, Some(false));
    let dynamichost = peer(&c, "dynamichost");
    assert_eq!(dynamichost.host, Host::Dynamic { defaultip: Some(ip("216.207.245.34")) });
    assert_eq!(dynamichost.callerid_number.as_deref(), Some("(256) 428-6011"));
    let biggateway = peer(&c, "biggateway");
    assert!(biggateway.trunk);
    assert_eq!(biggateway.context, "*");
    let marko = peer(&c, "marko");
    assert_eq!(marko.kind, PeerKind::Friend);
    assert_eq!(marko.secrets, ["moofoo-long", "foomoo-long", "shazbot-long"]);
    assert_eq!(peer(&c, "dundi").context, "dundi-e164-local");
}

#[test]
fn every_option_the_seed_names_is_in_the_table() {
    let names = [
        "bindport",
        "bindaddr",
        "iaxcompat",
        "nochecksums",
        "delayreject",
        "amaflags",
        "adsi",
        "srvlookup",
        "accountcode",
        "language",
        "mohinterpret",
        "mohsuggest",
        "bandwidth",
        "allow",
        "disallow",
        "jitterbuffer",
        "maxjitterbuffer",
        "resyncthreshold",
        "maxjitterinterps",
        "jittertargetextra",
        "encryption",
        "forceencryption",
        "trunkmaxsize",
        "trunkmtu",
        "trunkfreq",
        "trunktimestamps",
        "minregexpire",
        "maxregexpire",
        "iaxthreadcount",
        "iaxmaxthreadcount",
        "register",
        "subscribe_network_change_event",
        "authdebug",
        "tos",
        "cos",
        "regcontext",
        "autokill",
        "codecpriority",
        "allowfwdownload",
        "rtcachefriends",
        "rtsavesysname",
        "rtupdate",
        "rtautoclear",
        "rtignoreregexpire",
        "parkinglot",
        "calltokenoptional",
        "requirecalltoken",
        "calltokenexpiration",
        "maxcallnumbers",
        "maxcallnumbers_nonvalidated",
        "shrinkcallerid",
        "type",
        "context",
        "auth",
        "secret",
        "setvar",
        "dbsecret",
        "transfer",
        "maxauthreq",
        "callerid",
        "deny",
        "permit",
        "keyrotate",
        "username",
        "host",
        "description",
        "sendani",
        "port",
        "mask",
        "qualify",
        "qualifysmoothing",
        "qualifyfreqok",
        "qualifyfreqnotok",
        "connectedline",
        "mailbox",
        "inkeys",
        "outkey",
        "peercontext",
        "defaultip",
        "trunk",
        "timezone",
        "regexten",
        "immediate",
        "acl",
    ];
    for name in names {
        assert!(options::lookup(name).is_some(), "{name} missing from options::OPTIONS");
    }
}

// ---------------------------------------------------------------------------------
// The worked example "IAX2 Trunk"
// ---------------------------------------------------------------------------------

fn check_trunk_side(dir: &str, other: &str, other_ip: &str) {
    let loader = data_dir(dir);
    let c = match load(&loader) {
        Ok(c) => c,
        Err(e) => panic!("{dir}:\n{}", render(&e)),
    };
    assert!(c.notes.is_empty(), "{}", render(&c.notes));
    assert_eq!(c.switch, SwitchSettings::default());
    // No bindaddr: loopback only, unlike Asterisk's 0.0.0.0.
    assert_eq!(c.iax.general.bind, SocketAddr::from(([127, 0, 0, 1], 4569)));
    let [reg] = c.iax.registrations.as_slice() else { panic!("one registration expected") };
    let key = format!("{other}-trunk-key");
    assert_eq!(
        (reg.username.as_str(), reg.secret.as_deref(), reg.host.as_str(), reg.port),
        (other, Some(key.as_str()), other_ip, 4569)
    );
    assert_eq!(reg.location.line, 6 - u32::from(dir == "trunk-B") * 3);
    assert!(reg.location.file.ends_with(&format!("{dir}/iax.conf")), "{}", reg.location.file);
    let [p] = c.iax.peers.as_slice() else { panic!("one peer expected") };
    assert_eq!(p.name, other);
    assert_eq!(p.kind, PeerKind::Friend);
    assert_eq!(p.host, Host::Dynamic { defaultip: None });
    assert!(p.trunk);
    assert_eq!(p.secrets, [key]);
    assert_eq!(p.context, "iaxinbound");
    assert_eq!(p.contexts, ["iaxinbound"]);
    assert_eq!(p.auth, AuthMethods::default());
    assert_eq!(p.requirecalltoken, CallTokenRequirement::Yes);
    assert_eq!(p.qualify, Qualify::Off);
    assert_eq!(
        p.acl.rules,
        [
            AclRule { permit: false, net: IpNet { addr: ip("0.0.0.0"), prefix: 0 } },
            AclRule { permit: true, net: IpNet { addr: ip(other_ip), prefix: 32 } },
        ]
    );
    assert!(p.acl.permits(ip(other_ip)));
    assert!(p.acl.permits(ip(&format!("::ffff:{other_ip}"))));
    assert!(!p.acl.permits(ip("192.168.1.77")));
    // As in Asterisk, IPv4 rules do not apply to (non-mapped) IPv6 sources.
    assert!(p.acl.permits(ip("2001:db8::1")));
}

#[test]
fn trunk_example_loads_on_both_sides() {
    check_trunk_side("trunk-A", "B", "192.168.1.2");
    check_trunk_side("trunk-B", "A", "192.168.1.1");
}

// ---------------------------------------------------------------------------------
// An Asterisk folder: iax.conf and extensions.conf as Asterisk reads them
// ---------------------------------------------------------------------------------

#[test]
fn asterisk_folder_with_extensions_conf_loads() {
    use switch::dialplan::{App, Route, TimedHangup};
    let c = match load(&data_dir("asterisk-A")) {
        Ok(c) => c,
        Err(e) => panic!("asterisk-A:\n{}", render(&e)),
    };
    assert_eq!(c.iax.peers[0].context, "iaxinbound");
    let plan = &c.switch.dialplan;
    assert_eq!(plan.route("iaxinbound", "9196"), Some(Route::from(App::Echo)));
    let ten_seconds = Some(TimedHangup { after: Duration::from_secs(10), cause: 16 });
    assert_eq!(
        plan.route("iaxinbound", "1000"),
        Some(Route { app: App::Tone { freq_hz: 1000.0 }, hangup: ten_seconds })
    );
    // [globals] TRUNK and the called extension are filled in.
    assert_eq!(plan.lookup("iaxinbound", "1234"), Some(App::Dial { target: "IAX2/B/1234".into() }));
    assert_eq!(plan.lookup("iaxinbound", "2000"), Some(App::Hangup { cause: 17 }));
    assert_eq!(plan.lookup("iaxinbound", "8000"), Some(App::Dial { target: "IAX2/B/8000".into() }));
    assert_eq!(plan.lookup("iaxinbound", "8500"), None, "nothing it does is supported");
    assert_eq!(plan.lookup("iaxinbound", "h"), None);
    // [demo] comes from the #included file, through `include => demo`.
    assert_eq!(plan.lookup("iaxinbound", "9664"), Some(App::Music));
    assert_eq!(plan.lookup("iaxinbound", "s"), Some(App::Music));
    assert_eq!(plan.lookup("iaxinbound", "5555"), None);

    // Each thing not honoured is reported once, with file:line and a hint.
    let notes: Vec<String> = c.notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 5, "{notes:#?}");
    let dir = data_dir("asterisk-A").0.display().to_string();
    assert_eq!(
        notes[0],
        format!("{dir}/extensions.conf:34: `VoiceMail`: `VoiceMail` is not an application this switch runs; the step is skipped (the switch runs Answer, Echo, Playtones, Wait, Hangup, Busy, Congestion, Dial(IAX2/...|SIP/...), Playback, MusicOnHold, NoOp, Progress and Ringing)")
    );
    assert!(
        notes[1].starts_with(&format!("{dir}/extensions.conf:37: `8500`: extension 8500 in [iaxinbound] is left out")),
        "{notes:#?}"
    );
    assert!(
        notes[2]
            .starts_with(&format!("{dir}/extensions.conf:38: `VoiceMailMain`: `VoiceMailMain` is not an application")),
        "{notes:#?}"
    );
    assert!(
        notes[3]
            .starts_with(&format!("{dir}/extensions-demo.conf:5: `Hangup`: not timed: the switch has no sound files")),
        "{notes:#?}"
    );
    assert!(
        notes[4].starts_with(&format!("{dir}/extensions-demo.conf:8: `Wait`: a Wait before Playback is skipped")),
        "{notes:#?}"
    );
}

#[test]
fn switch_toml_wins_over_extensions_conf_for_the_same_context() {
    let loader = MapLoader::from_files([
        ("extensions.conf", "[in]\nexten => 1,1,Echo()\n[lab]\nexten => 2,1,Echo()\ninclude => in\ninclude => gone\n"),
        ("switch.toml", "[dialplan.in]\n\"1\" = \"music\"\n"),
    ]);
    let c = load(&loader).unwrap_or_else(|e| panic!("{}", render(&e)));
    let plan = &c.switch.dialplan;
    assert_eq!(plan.lookup("in", "1"), Some(switch::dialplan::App::Music));
    assert_eq!(plan.lookup("lab", "2"), Some(switch::dialplan::App::Echo));
    assert_eq!(plan.lookup("lab", "1"), Some(switch::dialplan::App::Music), "the include sees switch.toml's context");
    let notes: Vec<String> = c.notes.iter().map(ToString::to_string).collect();
    assert_eq!(
        notes,
        [
            "extensions.conf:1: context [in] is also defined in switch.toml; [dialplan.in] there wins and this one is not used (keep each context in one file)",
            "extensions.conf:3: `include`: [lab] includes [gone], which no file defines; the include finds nothing (define the context, or remove the include)",
        ]
    );
}

#[test]
fn extensions_conf_include_problems_are_errors() {
    let loader = MapLoader::from_files([
        ("iax.conf", "[general]\nbindport=4569\n"),
        ("extensions.conf", "[in]\nexten => 1,1,Echo()\n#include \"nowhere.conf\"\n"),
    ]);
    let e = must_fail(&loader);
    assert_eq!(render(&e), "  extensions.conf:3: #include nowhere.conf: no such file (create it, correct the name, or write #tryinclude for an optional file)\n");
}

// ---------------------------------------------------------------------------------
// Errors: each names the file, the line and the option
// ---------------------------------------------------------------------------------

fn one_error(loader: &MapLoader) -> Diagnostic {
    let errors = must_fail(loader);
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    errors.into_iter().next().unwrap_or_else(|| unreachable!())
}

fn iax(text: &str) -> MapLoader {
    MapLoader::from_files([("iax.conf", text)])
}

fn at(d: &Diagnostic) -> (String, u32, Option<&str>) {
    (d.location.file.clone(), d.location.line, d.key.as_deref())
}

#[test]
fn error_unknown_key() {
    let d = one_error(&iax("[general]\nbindport=4569\n\n[p]\ntype=user\ncontxt=default\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 6, Some("contxt")));
    assert_eq!(
        d.to_string(),
        "iax.conf:6: `contxt`: unknown option in a user/peer/friend section (did you mean `context`?)"
    );
}

#[test]
fn error_bad_integer() {
    let d = one_error(&iax("[general]\n; comment\nbindport=45x9\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 3, Some("bindport")));
    assert_eq!(
        d.to_string(),
        "iax.conf:3: `bindport`: expected a port number 1-65535, got \"45x9\" (write e.g. bindport=4569)"
    );
    let d = one_error(&iax("[general]\ntrunkfreq=5\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 2, Some("trunkfreq")));
    assert!(d.message.contains("10-1000"), "{d}");
}

#[test]
fn error_bad_boolean() {
    let d = one_error(&iax("[general]\n\n\ndelayreject=perhaps\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 4, Some("delayreject")));
    assert_eq!(
        d.to_string(),
        "iax.conf:4: `delayreject`: expected yes or no, got \"perhaps\" (write e.g. delayreject=yes)"
    );
}

#[test]
fn error_bad_permit() {
    let d = one_error(&iax("[p]\ntype=user\ndeny=0.0.0.0/0.0.0.0\npermit=192.168.1.300/24\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 4, Some("permit")));
    assert!(d.message.contains("192.168.1.300"), "{d}");
    let d = one_error(&iax("[p]\ntype=user\npermit=10.0.0.0/255.0.255.0\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 3, Some("permit")));
    assert!(d.message.contains("not contiguous"), "{d}");
}

#[test]
fn error_register_without_host() {
    let d = one_error(&iax("[general]\nregister => B:B@\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 2, Some("register")));
    assert!(d.message.contains("no host"), "{d}");
    let d = one_error(&iax("[general]\nbindport=4569\nregister => justauser\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 3, Some("register")));
}

#[test]
fn error_include_cycle() {
    let loader = MapLoader::from_files([
        ("iax.conf", "[general]\n#include \"a.conf\"\n"),
        ("a.conf", "delayreject=yes\n#include b.conf\n"),
        ("b.conf", "\n\n#include <iax.conf>\n"),
    ]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("b.conf".into(), 3, None));
    assert_eq!(d.message, "include cycle: iax.conf -> a.conf -> b.conf -> iax.conf");
}

#[test]
fn error_include_missing_file() {
    let loader = MapLoader::from_files([("iax.conf", "[general]\nbindport=4569\n#include \"peers.conf\"\n")]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("iax.conf".into(), 3, None));
    assert!(d.message.contains("peers.conf does not exist"), "{d}");
    // #tryinclude of a missing file is fine.
    assert!(load(&MapLoader::from_files([("iax.conf", "[general]\n#tryinclude \"peers.conf\"\n")])).is_ok());
}

#[test]
fn error_include_names_the_included_file() {
    let loader = MapLoader::from_files([
        ("iax.conf", "[general]\n#include peers.conf\n"),
        ("peers.conf", "[p]\ntype=user\nqualify=sometimes\n"),
    ]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("peers.conf".into(), 3, Some("qualify")));
}

#[test]
fn error_bad_toml() {
    let loader =
        MapLoader::from_files([("switch.toml", "[control]\nlisten = \"127.0.0.1:5039\"\n[log\nlevel = \"info\"\n")]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("switch.toml".into(), 3, None));
    let loader = MapLoader::from_files([("switch.toml", "[control]\nlisten = 5039\n")]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("switch.toml".into(), 2, None));
    assert!(d.message.contains("expected a string"), "{d}");
}

#[test]
fn error_unknown_toml_key() {
    let loader = MapLoader::from_files([(
        "switch.toml",
        "[control]\nlisten = \"127.0.0.1:5039\"\n\n[log]\nlevel = \"debug\"\ncolour = true\n",
    )]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("switch.toml".into(), 6, Some("colour")));
    let loader = MapLoader::from_files([("switch.toml", "[contrl]\nlisten = \"off\"\n")]);
    let d = one_error(&loader);
    assert_eq!(at(&d), ("switch.toml".into(), 1, Some("contrl")));
}

#[test]
fn switch_toml_values() {
    let loader = MapLoader::from_files([(
        "switch.toml",
        "[control]\nlisten = \"off\"\n[log]\nlevel = \"trace\"\n[dialplan.iaxinbound]\n\"9196\" = \"echo\"\n",
    )]);
    let c = load(&loader).unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(c.switch.control, None);
    assert_eq!(c.switch.log.level, LogLevel::Trace);
    assert_eq!(c.switch.dialplan.lookup("iaxinbound", "9196"), Some(switch::dialplan::App::Echo));
    let c = load(&MapLoader::default()).unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(c.switch.control, Some(SocketAddr::from(([127, 0, 0, 1], 5039))));
    assert_eq!(c.iax, IaxConfig::default());
}

#[test]
fn all_problems_are_reported_together() {
    let loader = MapLoader::from_files([
        (
            "iax.conf",
            "[general]\nbindport=0\ndelayreject=perhaps\nfrobnicate=1\nregister => nohost\n\
             [p]\ntype=friend\nhost=dynamic\npermit=10.0.0.0/40\nsecret=\n",
        ),
        ("switch.toml", "[log]\nlevel = \"loud\"\n"),
    ]);
    let errors = must_fail(&loader);
    let got: Vec<(String, u32, Option<&str>)> = errors.iter().map(at).collect();
    assert_eq!(
        got,
        [
            ("iax.conf".into(), 2, Some("bindport")),
            ("iax.conf".into(), 3, Some("delayreject")),
            ("iax.conf".into(), 4, Some("frobnicate")),
            ("iax.conf".into(), 5, Some("register")),
            ("iax.conf".into(), 9, Some("permit")),
            ("iax.conf".into(), 10, Some("secret")),
            ("switch.toml".into(), 2, Some("level")),
        ],
        "{}",
        render(&errors)
    );
}

#[test]
fn unsafe_open_dynamic_peer_on_public_address_is_an_error() {
    let d =
        one_error(&iax("[general]\nbindaddr=198.51.100.7\n[phone]\ntype=friend\nhost=dynamic\ncontext=from-phone\n"));
    assert_eq!(at(&d), ("iax.conf".into(), 5, Some("host")));
    // The same on a private address, or with a secret, is accepted.
    assert!(load_iax("[general]\nbindaddr=10.0.0.2\n[phone]\ntype=friend\nhost=dynamic\n").is_ok());
    assert!(load_iax("[general]\nbindaddr=198.51.100.7\n[phone]\ntype=friend\nhost=dynamic\nsecret=s-long-enough\n")
        .is_ok());
}

#[test]
fn keys_are_case_insensitive_and_arrows_work() {
    let c = must_load(
        "[General]\nBindPort = 4570\nREGISTER => me:pw@192.0.2.9:4600\n[x]\nTYPE=Friend\nHost=Dynamic\nSecret=s\n",
    );
    assert_eq!(c.iax.general.bind.port(), 4570);
    assert_eq!(c.iax.registrations[0].port, 4600);
    assert_eq!(peer(&c, "x").kind, PeerKind::Friend);
}

// ---------------------------------------------------------------------------------
// Random input never panics
// ---------------------------------------------------------------------------------

fn line_strategy() -> impl Strategy<Value = String> {
    let keys: Vec<&'static str> = options::OPTIONS.iter().map(|o| o.name).collect();
    let values = prop_oneof![
        Just(String::new()),
        Just("yes".to_string()),
        Just("dynamic".to_string()),
        Just("all".to_string()),
        Just("0.0.0.0/0.0.0.0".to_string()),
        "[0-9]{0,12}",
        "[-0-9a-z.:/@\\[\\], !]{0,24}",
        any::<String>(),
    ];
    prop_oneof![
        (proptest::sample::select(keys), prop_oneof![Just("="), Just("=>"), Just("+="), Just(" = ")], values)
            .prop_map(|(k, op, v)| format!("{k}{op}{v}")),
        "\\[[a-z!+(),]{0,12}\\]?(\\([!+a-z,]{0,10}\\)?)?",
        prop_oneof![Just("[general]"), Just("[callnumberlimits]"), Just("[t](!)"), Just("[p](t)"), Just("[p](+)")]
            .prop_map(str::to_string),
        "#(include|tryinclude|exec|bogus) ?\"?(iax\\.conf|a\\.conf|b\\.conf|/x|\\.\\./y|\\*)?\"?",
        "[;\\\\=>\\[\\]()#a-z0-9 -]{0,40}",
        ";--|--;|\\\\;",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_iax_conf_never_panics(
        main in proptest::collection::vec(line_strategy(), 0..40),
        a in proptest::collection::vec(line_strategy(), 0..10),
        b in proptest::collection::vec(line_strategy(), 0..10),
        toml in "[\\[\\]a-z=\" .:0-9\\n]{0,60}",
    ) {
        let loader = MapLoader::from_files([
            ("iax.conf", main.join("\n")),
            ("a.conf", a.join("\r\n")),
            ("b.conf", b.join("\n")),
            ("switch.toml", toml),
        ]);
        match load(&loader) {
            Ok(c) => {
                for n in &c.notes {
                    prop_assert!(n.location.line > 0);
                }
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    let _ = e.to_string();
                }
            }
        }
    }
}
