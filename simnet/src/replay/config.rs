//! The switch's configuration in a replay: the files of `--config DIR`
//! (`iax.conf`, `extensions.conf`, `switch.toml` and what they include), or
//! the permissive built-in one, and the secrets the remote party needs to
//! recompute MD5 answers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use switch::config::{self, LoadedConfig, MapLoader};

/// The context every built-in user and friend lands in.
pub const BUILTIN_CONTEXT: &str = "replay";

/// Names that may be written as an `iax.conf` section.
fn section_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c))
        && !name.eq_ignore_ascii_case("general")
}

/// The built-in configuration: the switch binds the captured port, admits any
/// caller as `guest`, accepts registrations of every user name the capture
/// shows (no secret), and answers every extension with echo.
pub fn builtin(switch: SocketAddr, usernames: &BTreeSet<String>) -> BTreeMap<String, String> {
    let any = if switch.is_ipv4() { "0.0.0.0" } else { "::" };
    let mut iax = format!(
        "; Built-in replay configuration (docs/replay.md).\n\
         [general]\n\
         bindaddr = {any}\n\
         bindport = {port}\n\
         \n\
         ; Callers without USERNAME.\n\
         [guest]\n\
         type = user\n\
         context = {BUILTIN_CONTEXT}\n",
        port = switch.port()
    );
    for name in usernames.iter().filter(|n| section_name_ok(n) && !n.eq_ignore_ascii_case("guest")) {
        iax.push_str(&format!(
            "\n; USERNAME seen in the capture.\n[{name}]\ntype = friend\nhost = dynamic\ncontext = {BUILTIN_CONTEXT}\n"
        ));
    }
    let toml = format!("# Built-in replay dialplan: every extension is answered with echo.\n[dialplan.{BUILTIN_CONTEXT}]\n\"_.\" = \"echo\"\n");
    BTreeMap::from([("iax.conf".to_string(), iax), ("switch.toml".to_string(), toml)])
}

/// The peer the built-in client configuration calls and registers with.
pub const BUILTIN_PEER: &str = "replay-remote";

/// The secret of the built-in client configuration: the capture does not hold
/// the real one, so MD5 answers differ unless `--config` gives it.
pub const BUILTIN_SECRET: &str = "replay-unknown";

/// The built-in configuration for `--role client`: the switch binds the
/// captured port of the requesting party, registers every captured REGREQ
/// user name with the remote party, and has the remote party as a friend
/// (`BUILTIN_PEER`) to call with `originate`.
pub fn builtin_client(
    switch: SocketAddr,
    remote: SocketAddr,
    registers: &BTreeSet<String>,
    username: Option<&str>,
) -> BTreeMap<String, String> {
    let any = if switch.is_ipv4() { "0.0.0.0" } else { "::" };
    let host = match remote {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let mut iax = format!(
        "; Built-in replay configuration for --role client (docs/replay.md).\n\
         [general]\n\
         bindaddr = {any}\n\
         bindport = {port}\n",
        port = switch.port()
    );
    for name in registers.iter().filter(|n| section_name_ok(n)) {
        iax.push_str(&format!("register => {name}:{BUILTIN_SECRET}@{host}:{}\n", remote.port()));
    }
    iax.push_str(&format!(
        "\n; The remote party.\n[{BUILTIN_PEER}]\ntype = friend\nhost = {}\nport = {}\nsecret = {BUILTIN_SECRET}\n\
         context = {BUILTIN_CONTEXT}\n",
        remote.ip(),
        remote.port()
    ));
    if let Some(user) = username.filter(|n| section_name_ok(n)) {
        iax.push_str(&format!("username = {user}\n"));
    }
    let toml = format!("# Built-in replay dialplan: every extension is answered with echo.\n[dialplan.{BUILTIN_CONTEXT}]\n\"_.\" = \"echo\"\n");
    BTreeMap::from([("iax.conf".to_string(), iax), ("switch.toml".to_string(), toml)])
}

/// The password of every user of the built-in SIP configuration; the remote
/// party does not know it (it sends [`super::sip::PLACEHOLDER_PASSWORD`]).
pub const BUILTIN_SIP_PASSWORD: &str = "replay-unknown-password";

/// The dialplan context of the built-in SIP configuration.
pub const BUILTIN_SIP_CONTEXT: &str = "sip-replay";

/// Characters `[sip.users.NAME]` accepts in a user name (the switch's check).
fn sip_user_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c))
}

/// Extensions written as TOML keys: no quotes, escapes, spaces or patterns.
fn exten_ok(exten: &str) -> bool {
    !exten.is_empty()
        && exten.len() <= 64
        && !exten.starts_with('_')
        && exten.chars().all(|c| c.is_ascii_alphanumeric() || "-.+*#!~".contains(c))
}

/// The SIP media port of the built-in configuration: the captured one, unless
/// it collides with signalling or the IAX2 port.
fn sip_rtp_port(listen: SocketAddr, captured: Option<u16>) -> u16 {
    [captured.unwrap_or(16384), 16384, 16386]
        .into_iter()
        .find(|p| *p != 0 && *p != listen.port() && *p != 4569)
        .unwrap_or(16388)
}

/// The `iax.conf` of a SIP replay: IAX2 is unused, on a port SIP does not take.
pub fn builtin_sip_iax(listen: SocketAddr, media: Option<u16>) -> String {
    let rtp = sip_rtp_port(listen, media);
    let port = [4569u16, 4570, 4571].into_iter().find(|p| *p != listen.port() && *p != rtp).unwrap_or(4572);
    let any = if listen.is_ipv4() { "0.0.0.0" } else { "::" };
    format!("; Built-in replay configuration (docs/replay.md): IAX2 unused.\n[general]\nbindaddr = {any}\nbindport = {port}\n")
}

/// The built-in `[sip]` of a SIP replay (switch.toml text): the switch
/// listens where the captured party did, challenges with the captured realm,
/// knows every captured user with a placeholder password (the capture does
/// not hold passwords), and answers every captured INVITE's Request-URI user
/// with echo.
pub fn builtin_sip(
    listen: SocketAddr,
    media: Option<u16>,
    realm: Option<&str>,
    users: &BTreeSet<String>,
    extens: &BTreeSet<String>,
) -> String {
    let realm = realm
        .filter(|r| !r.trim().is_empty() && !r.contains(|c: char| c == '"' || c == '\\' || c.is_control()))
        .unwrap_or("switch");
    // Media takes a port pair per call from the default rtp_ports; the replay
    // sends RTP wherever the switch's SDP says.
    let _ = media;
    let rtp = listen.ip();
    let mut t = format!(
        "\n# Built-in SIP replay configuration (docs/replay.md).\n[sip]\nlisten = \"{listen}\"\nrtp = \"{rtp}\"\n\
         realm = \"{realm}\"\ncontext = \"{BUILTIN_SIP_CONTEXT}\"\n\
         # The placeholder password makes every captured proof fail: the replay\n\
         # compares answers, so the brute-force defence must not silence them.\n\
         auth_failures_before_throttle = 0\nauth_failures_before_ban = 0\n"
    );
    for u in users.iter().filter(|u| sip_user_ok(u)) {
        t.push_str(&format!(
            "\n[sip.users.\"{u}\"]\npassword = \"{BUILTIN_SIP_PASSWORD}\"   # the capture does not hold the real one\n"
        ));
    }
    t.push_str(&format!(
        "\n# Every captured INVITE's Request-URI user is answered with echo.\n[dialplan.{BUILTIN_SIP_CONTEXT}]\n"
    ));
    for e in extens.iter().filter(|e| exten_ok(e)) {
        t.push_str(&format!("\"{e}\" = \"echo\"\n"));
    }
    t
}

/// Loads the files as the switch will, to learn its bind address and secrets.
pub fn load(files: &BTreeMap<String, String>) -> Result<LoadedConfig, String> {
    let loader = MapLoader::from_files(files.clone());
    config::load(&loader).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| format!("  {d}")).collect();
        format!("the replay configuration is invalid:\n{}", lines.join("\n"))
    })
}

/// The secrets of the user or peer `name` (case-insensitive), first one first.
pub fn secrets(loaded: &LoadedConfig, name: &str) -> Vec<String> {
    loaded
        .iax
        .peers
        .iter()
        .filter(|p| p.name.eq_ignore_ascii_case(name))
        .flat_map(|p| p.secrets.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_loads() {
        let names = BTreeSet::from(["alice".to_string(), "bad name".to_string()]);
        let files = builtin("192.0.2.1:4566".parse().unwrap(), &names);
        let loaded = load(&files).unwrap();
        assert_eq!(loaded.iax.general.bind.port(), 4566);
        let peers: Vec<&str> = loaded.iax.peers.iter().map(|p| p.name.as_str()).collect();
        assert!(peers.contains(&"guest") && peers.contains(&"alice") && !peers.contains(&"bad name"));
        assert!(loaded.switch.dialplan.lookup(BUILTIN_CONTEXT, "442088205155").is_some());
        assert!(loaded.switch.dialplan.lookup(BUILTIN_CONTEXT, "s").is_some());
        let v6 = builtin("[2001:db8::1]:4569".parse().unwrap(), &BTreeSet::new());
        assert!(load(&v6).unwrap().iax.general.bind.is_ipv6());
    }

    #[test]
    fn builtin_sip_config_loads() {
        let listen: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let users = BTreeSet::from(["alice".to_string(), "bad\"name".to_string()]);
        let extens = BTreeSet::from(["echo".to_string(), "4321".to_string(), "s p".to_string()]);
        let mut files = BTreeMap::from([("iax.conf".to_string(), builtin_sip_iax(listen, Some(4569)))]);
        files.insert("switch.toml".into(), builtin_sip(listen, Some(4569), Some("Huawei"), &users, &extens));
        let loaded = load(&files).unwrap();
        let sip = loaded.switch.sip.unwrap();
        assert_eq!((sip.listen, sip.rtp, sip.realm.as_str()), (listen, listen.ip(), "Huawei"));
        assert_eq!(sip.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["alice"]);
        assert!(loaded.switch.dialplan.lookup(BUILTIN_SIP_CONTEXT, "4321").is_some());
        assert!(loaded.switch.dialplan.lookup(BUILTIN_SIP_CONTEXT, "1234").is_none());
    }

    #[test]
    fn a_config_dir_with_extensions_conf_gives_its_dialplan() {
        // What `cargo xtask replay --config DIR` passes: every file of DIR.
        let files = BTreeMap::from([
            ("iax.conf".to_string(), "[general]\nbindport = 4569\n[guest]\ntype = user\ncontext = in\n".to_string()),
            ("extensions.conf".to_string(), "[in]\nexten => _X.,1,Answer()\n same => n,Echo()\n".to_string()),
        ]);
        let loaded = load(&files).unwrap();
        assert_eq!(loaded.switch.dialplan.lookup("in", "4321"), Some(switch::dialplan::App::Echo));
        assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
    }

    #[test]
    fn builtin_client_config_loads() {
        let regs = BTreeSet::from(["client".to_string()]);
        let files =
            builtin_client("192.0.2.1:4570".parse().unwrap(), "192.0.2.2:4569".parse().unwrap(), &regs, Some("client"));
        let loaded = load(&files).unwrap();
        assert_eq!(loaded.iax.general.bind.port(), 4570);
        assert!(loaded.iax.peers.iter().any(|p| p.name == BUILTIN_PEER));
        assert_eq!(secrets(&loaded, BUILTIN_PEER), vec![BUILTIN_SECRET.to_string()]);
    }
}
