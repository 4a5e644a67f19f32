//! Scenario files: the shipped ones load, malformed ones fail at the right line.

use std::path::{Path, PathBuf};

use simnet::{list_scenarios, Network, Scenario, ScenarioError};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn shipped_scenarios_load_and_run_on_both_networks_unless_they_say_why() {
    let all = list_scenarios(&shipped_dir()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    for required in [
        "double-registration",
        "double-registration-partition",
        "double-registration-restart",
        "double-registration-wrong-secret",
        "registration-under-loss",
        "iax-call",
        "iax-call-autokill",
        "iax-call-unknown-extension",
        "iax-encrypted-call",
        "trunk-800",
        "trunk-800-lossy",
        "nat-full-cone",
        "nat-address-restricted",
        "nat-port-restricted",
        "nat-symmetric",
        "nat-two-phones-one-ip",
        "nat-binding-expiry",
        "iax2-behind-nat",
        "rtp-bleed",
        "register-storm-vs-calls",
        "sip-brute-force",
        "sip-scanner",
        "ipv6-only",
    ] {
        assert!(names.contains(&required), "missing scenario {required}: {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list_scenarios sorts by name");
    for s in &all {
        // One network only is a statement about that network; the
        // description must make it.
        match s.networks().as_slice() {
            [Network::V4, Network::V6] => {}
            [Network::V4] => assert!(s.description.contains("IPv4 only"), "{}: say why it is IPv4 only", s.name),
            [Network::V6] => assert!(s.description.contains("IPv6"), "{}: say why it is IPv6 only", s.name),
            other => panic!("{}: networks {other:?}", s.name),
        }
        assert!(!s.description.is_empty(), "{}", s.name);
        assert_eq!(s.path.file_stem().and_then(|f| f.to_str()), Some(s.name.as_str()), "file named after the scenario");
    }
}

const GOOD: &str = r#"name = "t"
description = "test"
duration = "2m"

[hosts.a]
iax_conf = """
[general]
bindaddr = ${any}
register => A:s@${[b]}
"""

[hosts.b]
iax_conf = """
[general]
bindaddr = ${any}
"""

[[timeline]]
at = "30s"
action = "partition"
between = ["a", "b"]
label = "cut"

[[expect]]
description = "x"
host = "a"
event = "registered"
after = "cut"
within = "5s"
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(Path::new("scenarios/t.toml"), text)
}

/// Replaces the first occurrence of `from` in GOOD and expects an error on `line`.
fn broken(from: &str, to: &str) -> ScenarioError {
    assert!(GOOD.contains(from), "test bug: {from:?} not in GOOD");
    let text = GOOD.replacen(from, to, 1);
    match parse(&text) {
        Ok(_) => panic!("accepted a broken scenario:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn the_good_base_parses() {
    let s = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.name, "t");
    assert_eq!(s.networks(), vec![Network::V4, Network::V6], "both networks by default");
    assert_eq!(s.duration, std::time::Duration::from_secs(120));
}

#[test]
fn toml_syntax_error_names_the_line() {
    let e = broken("description = \"test\"", "description = \"test");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().starts_with("scenarios/t.toml:2:"), "{e}");
    assert!(!e.hint.is_empty());
}

#[test]
fn unknown_key_names_the_line() {
    let e = broken("label = \"cut\"", "lable = \"cut\"");
    assert_eq!(e.line, Some(22), "{e}");
    assert!(e.message.contains("lable"), "{e}");
}

#[test]
fn bad_duration_names_the_line() {
    let e = broken("within = \"5s\"", "within = \"5 parsecs\"");
    assert_eq!(e.line, Some(29), "{e}");
    let e = broken("duration = \"2m\"", "duration = 120");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("120s"), "suggests a unit: {e}");
}

#[test]
fn bad_probability_names_the_line() {
    let e = broken("duration = \"2m\"\n", "duration = \"2m\"\n[link]\nloss = 1.5\n");
    assert_eq!(e.line, Some(5), "{e}");
}

#[test]
fn unknown_host_in_timeline_names_the_line() {
    let e = broken("between = [\"a\", \"b\"]", "between = [\"a\", \"c\"]");
    assert_eq!(e.line, Some(21), "{e}");
    assert!(e.message.contains("`c`"), "{e}");
}

#[test]
fn unknown_action_names_the_line() {
    let e = broken("action = \"partition\"", "action = \"partiton\"");
    assert_eq!(e.line, Some(20), "{e}");
    assert!(e.hint.contains("partition"), "{e}");
}

#[test]
fn unknown_placeholder_names_the_line_inside_the_config_text() {
    let e = broken("register => A:s@${[b]}", "register => A:s@${[c]}");
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("${[c]}"), "{e}");
}

#[test]
fn unknown_event_and_label_name_the_line() {
    let e = broken("event = \"registered\"", "event = \"registred\"");
    assert_eq!(e.line, Some(27), "{e}");
    let e = broken("after = \"cut\"", "after = \"cutt\"");
    assert_eq!(e.line, Some(28), "{e}");
    assert!(e.hint.contains("cut"), "{e}");
}

#[test]
fn actions_after_the_end_are_refused() {
    let e = broken("at = \"30s\"", "at = \"3m\"");
    assert!(e.message.contains("after the end"), "{e}");
}

#[test]
fn missing_file_is_an_error() {
    let e = Scenario::load(Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn config_dir_is_relative_to_the_scenario_and_checked() {
    let dir = std::env::temp_dir().join(format!("simnet-config-dir-{}", std::process::id()));
    let conf = dir.join("configs/b");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("iax.conf"), "[general]\nbindaddr = ${any}\nregister => B:s@${[a]}\n").unwrap();
    let text = GOOD.replace(
        "[hosts.b]\niax_conf = \"\"\"\n[general]\nbindaddr = ${any}\n\"\"\"",
        "[hosts.b]\nconfig_dir = \"configs/b\"",
    );
    assert_ne!(text, GOOD);
    let path = dir.join("t.toml");
    std::fs::write(&path, &text).unwrap();
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.host_names(), vec!["a", "b"]);

    std::fs::write(conf.join("iax.conf"), "[general]\nbindaddr = ${any}\nregister => B:s@${[z]}\n").unwrap();
    let e = Scenario::load(&path).unwrap_err();
    assert_eq!(e.path, conf.join("iax.conf"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");

    std::fs::remove_dir_all(conf.join("..")).unwrap();
    let e = Scenario::load(&path).unwrap_err();
    assert_eq!(e.line, Some(13), "{e}");
    assert!(e.message.contains("config_dir"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// GOOD with one more timeline entry or expectation appended; the error's line is
/// counted from the start of the appended text (its first line is line 1).
fn appended(extra: &str) -> (ScenarioError, usize) {
    let text = format!("{GOOD}\n{extra}");
    let base = GOOD.lines().count() + 2;
    match parse(&text) {
        Ok(_) => panic!("accepted a broken scenario:\n{text}"),
        Err(e) => (e, base),
    }
}

fn accepted(extra: &str) -> Scenario {
    parse(&format!("{GOOD}\n{extra}")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn command_actions_are_checked_at_load_time() {
    accepted("[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"a\"\nline = \"originate IAX2/b/600 app=pattern count=800 hold=60\"\nlabel = \"calls\"\n");
    accepted("[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"b\"\nline = \"hangup all\"\n");
    accepted("[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"a\"\nline = \"originate IAX2/${b}/600\"\n");

    let (e, base) =
        appended("[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"a\"\nline = \"hangup everything\"\n");
    assert_eq!(e.line, Some(base + 4), "{e}");
    assert!(e.message.contains("unknown operator command"), "{e}");
    assert!(e.hint.contains("show stats"), "{e}");

    let (e, base) = appended(
        "[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"a\"\nline = \"originate IAX2/b/600 count=0\"\n",
    );
    assert_eq!(e.line, Some(base + 4), "{e}");
    assert!(e.message.contains("count"), "{e}");

    let (e, _) = appended("[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"a\"\n");
    assert!(e.message.contains("needs `line`"), "{e}");
    let (e, _) = appended("[[timeline]]\nat = \"10s\"\naction = \"command\"\nline = \"show stats\"\n");
    assert!(e.message.contains("needs `host`"), "{e}");
    let (e, _) = appended("[[timeline]]\nat = \"10s\"\naction = \"reload\"\nhost = \"a\"\nline = \"show stats\"\n");
    assert!(e.message.contains("`line` does not apply"), "{e}");
    let (e, base) = appended(
        "[[timeline]]\nat = \"10s\"\naction = \"command\"\nhost = \"a\"\nline = \"originate IAX2/${c}/600\"\n",
    );
    assert_eq!(e.line, Some(base + 4), "{e}");
}

#[test]
fn count_sum_and_metric_expectations_parse() {
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_answered\"\nvalue = 800\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_answered\"\nhost = \"a\"\nafter = \"cut\"\nwithin = \"5s\"\nvalue = { ge = 798, le = 800 }\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"sum\"\nevent = \"call_ended\"\nfield = [\"lost\", \"reordered\"]\nvalue = 0\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"sum\"\nevent = \"call_ended\"\nfield = [\"frames_received\", \"-frames_sent\"]\nvalue = { ge = -2 }\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"trunk_datagrams_per_tick\"\nfrom = \"a\"\nto = \"b\"\nafter = \"cut\"\nwithin = \"5s\"\ntolerance = 0\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"wire_bytes_per_second\"\nfrom = \"a\"\nto = \"b\"\ntolerance = \"5%\"\nvalue = { gt = 0 }\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"max_backlog\"\nhost = \"b\"\nvalue = { le = 1000 }\n");
    accepted("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"cleartext_pattern_frames\"\nvalue = 0\n");
    accepted("[[expect]]\ndescription = \"x\"\nevent = \"command\"\nwhere = { call_numbers_in_use = 0 }\n");
}

#[test]
fn count_sum_and_metric_mistakes_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_answered\"\n", 0, "needs `value`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_answered\"\nvalue = \"800\"\n", 4, "`value`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_answered\"\nvalue = { about = 800 }\n", 4, "unknown comparison `about`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_answered\"\nvalue = 1\nat_least = 2\n", 0, "`at_least` does not apply"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"sum\"\nevent = \"call_ended\"\nvalue = 0\n", 0, "needs `field`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_ended\"\nfield = \"lost\"\nvalue = 0\n", 0, "`field` does not apply"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"happens\"\nevent = \"call_ended\"\nvalue = 0\n", 0, "`value` does not apply"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"sum\"\nevent = \"call_endd\"\nfield = \"lost\"\nvalue = 0\n", 3, "unknown event"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"trunk_datagrams\"\nvalue = 1\n", 3, "unknown metric"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nvalue = 1\n", 0, "needs `metric`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"trunk_datagrams_per_tick\"\nfrom = \"a\"\ntolerance = 0\n", 0, "needs `from` and `to`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"trunk_datagrams_per_tick\"\nfrom = \"a\"\nto = \"b\"\n", 0, "`value` and/or `tolerance`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"max_backlog\"\nvalue = 1\n", 0, "needs `host`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"max_backlog\"\nhost = \"b\"\ntolerance = 0.1\n", 0, "no expected value"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"datagrams_per_second\"\nfrom = \"a\"\nto = \"c\"\nvalue = 1\n", 5, "unknown host `c`"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"datagrams_per_second\"\nevent = \"call_ended\"\nfrom = \"a\"\nto = \"b\"\nvalue = 1\n", 0, "`event` does not apply"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"metric\"\nmetric = \"wire_bytes_per_second\"\nfrom = \"a\"\nto = \"b\"\ntolerance = \"5 percent\"\n", 6, ""),
        ("[[expect]]\ndescription = \"x\"\nkind = \"counted\"\nevent = \"call_ended\"\n", 2, "unknown expectation kind"),
        ("[[expect]]\ndescription = \"x\"\nkind = \"count\"\nevent = \"call_ended\"\nvalu = 1\n", 4, "valu"),
    ];
    for (extra, line, message) in cases {
        let (e, base) = appended(extra);
        assert_eq!(e.line, Some(base + line), "{extra}: {e}");
        assert!(e.message.contains(message), "{extra}: {e}");
        assert!(!e.hint.is_empty(), "{extra}: {e}");
    }
}
