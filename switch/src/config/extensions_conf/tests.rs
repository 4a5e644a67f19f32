use std::time::Duration;

use super::*;
use crate::config::MapLoader;
use crate::dialplan::{App, Route, TimedHangup};

fn load(files: &[(&str, &str)]) -> ExtensionsOutcome {
    read(&MapLoader::from_files(files.iter().map(|(k, v)| (k.to_string(), v.to_string()))))
}

fn one(text: &str) -> ExtensionsOutcome {
    load(&[(EXTENSIONS_CONF, text)])
}

fn notes(o: &ExtensionsOutcome) -> Vec<String> {
    o.notes.iter().map(ToString::to_string).collect()
}

fn route(o: &ExtensionsOutcome, ctx: &str, exten: &str) -> Option<Route> {
    o.dialplan.route(ctx, exten)
}

fn timed(app: App, secs: u64, cause: u8) -> Route {
    Route { app, hangup: Some(TimedHangup { after: Duration::from_secs(secs), cause }) }
}

#[test]
fn absent_file_is_an_empty_dialplan() {
    let o = load(&[]);
    assert!(o.dialplan.is_empty() && o.errors.is_empty() && o.notes.is_empty());
}

#[test]
fn every_syntax_form() {
    let text = "\
; a comment
[general]
static=yes
writeprotect=no
autofallthrough=yes

[globals]
PEER=b ; trailing comment

[iaxinbound]
exten => 9196,1,Answer()
same => n,Echo()
exten => 1000,1(start),Answer
exten => 1000,n,Playtones(1000)
exten => 1000,n(pause),Wait(10)
exten => 1000,pause+1,Hangup()
exten => _1XXX,1,Dial(IAX2/${PEER}/${EXTEN})
exten = _[2-9]XX,1,Dial(SIP/${EXTEN:1})
exten => _9!,1,Hangup(17)
exten => s,1,Echo
exten => h,1,NoOp(bye)
include => common
;-- a block
comment --;
[common]
exten => _X.,1,Congestion()
exten => 5,1,Busy
exten => 6,1,NoOp()
";
    let o = one(text);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert_eq!(notes(&o), Vec::<String>::new());
    assert_eq!(route(&o, "iaxinbound", "9196"), Some(Route::from(App::Echo)));
    assert_eq!(route(&o, "iaxinbound", "1000"), Some(timed(App::Tone { freq_hz: 1000.0 }, 10, 16)));
    assert_eq!(route(&o, "iaxinbound", "1234"), Some(Route::from(App::Dial { target: "IAX2/b/1234".into() })));
    assert_eq!(route(&o, "iaxinbound", "234"), Some(Route::from(App::Dial { target: "SIP/34".into() })));
    assert_eq!(route(&o, "iaxinbound", "9"), Some(Route::from(App::Hangup { cause: 17 })));
    assert_eq!(route(&o, "iaxinbound", "s"), Some(Route::from(App::Echo)));
    assert_eq!(route(&o, "iaxinbound", "h"), None, "h is read, not routed");
    // Through the include, in order.
    assert_eq!(route(&o, "iaxinbound", "55"), Some(Route::from(App::Hangup { cause: 34 })));
    assert_eq!(route(&o, "common", "5"), Some(Route::from(App::Hangup { cause: 17 })));
    // Nothing but NoOp: falls off the end, hung up normally.
    assert_eq!(route(&o, "common", "6"), Some(Route::from(App::Hangup { cause: 16 })));
    assert_eq!(o.contexts.get("common").map(|l| l.line), Some(25));
}

#[test]
fn same_named_sections_add_to_one_context() {
    let o = one("[a]\nexten => 1,1,Echo()\n[b]\nexten => 2,1,Echo()\n[a]\nexten => 3,1,Echo()\n");
    assert!(o.notes.is_empty(), "{:?}", notes(&o));
    assert!(route(&o, "a", "1").is_some() && route(&o, "a", "3").is_some() && route(&o, "a", "2").is_none());
}

#[test]
fn timed_programs() {
    let o = one("[t]\n\
         exten => 1,1,Answer()\nsame => n,Wait(3)\nsame => n,Hangup(17)\n\
         exten => 2,1,Playtones(!350+440/100,!0/100)\nsame => n,Wait(2)\n\
         exten => 3,1,Answer()\nsame => n,Wait(1)\nsame => n,Playtones(440)\nsame => n,Wait(1.5)\nsame => n,Hangup\n");
    assert_eq!(route(&o, "t", "1"), Some(timed(App::Silence, 3, 17)));
    // Falling off the end after the Wait: a normal hangup.
    assert_eq!(route(&o, "t", "2"), Some(timed(App::Tone { freq_hz: 350.0 }, 2, 16)));
    // The tone cannot start later than the answer: reported, and the call still ends on time.
    let r = route(&o, "t", "3").unwrap();
    assert_eq!(r.hangup, Some(TimedHangup { after: Duration::from_millis(2500), cause: 16 }));
    assert_eq!(r.app, App::Tone { freq_hz: 440.0 });
    let n = notes(&o);
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(n[0].starts_with("extensions.conf:9: `Playtones`: the switch starts it at the answer"), "{n:?}");
}

#[test]
fn sequences_the_switch_cannot_honour_are_reported_with_lines() {
    let o = one("[x]\n\
         exten => 1,1,Answer()\nsame => n,Wait(2)\nsame => n,Echo()\n\
         exten => 2,1,Dial(IAX2/b/2)\nsame => n,Playback(vm-nobodyavail)\nsame => n,Hangup()\n\
         exten => 3,1,Playtones(1000)\n");
    let n = notes(&o);
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(n[0].starts_with("extensions.conf:3: `Wait`: a Wait before Echo is skipped"), "{n:?}");
    assert!(
        n[1].starts_with("extensions.conf:6: `Playback`: never reached here: Dial runs until the call ends"),
        "{n:?}"
    );
    assert!(n[2].starts_with("extensions.conf:8: `Playtones`: the priorities end right after this"), "{n:?}");
    assert_eq!(route(&o, "x", "1"), Some(Route::from(App::Echo)));
    assert_eq!(route(&o, "x", "3"), Some(Route::from(App::Tone { freq_hz: 1000.0 })));
}

#[test]
fn unsupported_applications_are_reported_once() {
    let o = one("[x]\n\
         exten => 100,1,Dial(IAX2/b/100,20)\nsame => n,VoiceMail(100@default)\nsame => n,Hangup()\n\
         exten => 200,1,VoiceMail(200@default)\n\
         exten => 300,1,Set(FOO=1)\nsame => n,Echo()\n");
    let n = notes(&o);
    assert_eq!(n.len(), 4, "{n:?}");
    assert!(
        n[0].starts_with("extensions.conf:2: `Dial`: Dial: the timeout and options `20` are not honoured"),
        "{n:?}"
    );
    assert!(
        n[1].starts_with("extensions.conf:3: `VoiceMail`: `VoiceMail` is not an application this switch runs")
            && n[1].contains("also at extensions.conf:5"),
        "{n:?}"
    );
    assert!(n[2].starts_with("extensions.conf:5: `200`: extension 200 in [x] is left out"), "{n:?}");
    assert!(n[3].starts_with("extensions.conf:6: `Set`: `Set` is not an application"), "{n:?}");
    assert_eq!(route(&o, "x", "100"), Some(Route::from(App::Dial { target: "IAX2/b/100".into() })));
    assert_eq!(route(&o, "x", "200"), None);
    assert_eq!(route(&o, "x", "300"), Some(Route::from(App::Echo)));
}

#[test]
fn line_errors_have_file_and_line() {
    let o = one("exten => 1,1,Echo()\n\
         [x]\n\
         same => n,Echo()\n\
         exten => 1\n\
         exten => 2,x,Echo()\n\
         exten => 3,1,Echo(\n\
         exten => 4,1,Echo()\nexten => 4,1,Hangup()\n\
         exten => 5/100,1,Echo()\n\
         exten => _1[2,1,Echo()\n\
         exten => 6,2,Echo()\n\
         exten => 7,1,Answer()\nexten => 7,3,Echo()\n\
         exten => 8,1,Wait(soon)\n\
         exten => 9,hint,SIP/9\nexten => 10,hint,SIP/10\n\
         bogus line\n\
         switch => Realtime\n\
         include => other,9:00-17:00,mon-fri,*,*\n\
         [other]\n");
    let n = notes(&o);
    let starts = [
        "extensions.conf:1: `exten` before any [context]",
        "extensions.conf:3: `same`: `same =>` with no `exten =>`",
        "extensions.conf:4: `exten`: expected EXTEN,PRIORITY",
        "extensions.conf:5: `exten`: priority \"x\" is not a number",
        "extensions.conf:6: `exten`: application \"Echo(\" has `(` without `)`",
        "extensions.conf:8: `exten`: priority 1 of 4 is already used at extensions.conf:7",
        "extensions.conf:9: `exten`: extension \"5/100\" matches on caller ID",
        "extensions.conf:10: `exten`: extension \"_1[2\": pattern",
        "extensions.conf:11: `6`: extension 6 in [x] has no priority 1",
        "extensions.conf:13: `7`: priority 3 of 7 is never reached: priority 2 is missing",
        "extensions.conf:14: `Wait`: Wait(soon): expected seconds",
        "extensions.conf:14: `8`: extension 8 in [x] is left out: nothing it does is supported",
        "extensions.conf:15: `exten`: hints (device state for BLF) are not supported",
        "extensions.conf:17: line not understood: \"bogus line\"",
        "extensions.conf:18: `switch`: `switch =>` is not supported",
        "extensions.conf:19: `include`: include => other with a time condition",
    ];
    assert_eq!(n.len(), starts.len(), "{n:#?}");
    for (note, start) in n.iter().zip(starts) {
        assert!(note.starts_with(start), "{note:?} should start with {start:?}");
    }
    assert!(n[12].contains("also at extensions.conf:16"), "{n:?}");
    assert!(o.errors.is_empty());
    assert_eq!(route(&o, "x", "4"), Some(Route::from(App::Echo)));
    assert_eq!(route(&o, "x", "7"), Some(Route::from(App::Hangup { cause: 16 })));
}

#[test]
fn hint_lines_do_not_count_for_n() {
    let o =
        one("[x]\nexten => 100,hint,SIP/100\nexten => 100,1,Answer()\nexten => 100,hint,SIP/100\nsame => n,Echo()\n");
    assert_eq!(route(&o, "x", "100"), Some(Route::from(App::Echo)));
    assert_eq!(notes(&o).len(), 1, "{:?}", notes(&o));
}

#[test]
fn general_options_that_change_nothing_are_quiet() {
    let o = one("[general]\nstatic=yes\nautofallthrough=no\nuserscontext=default\n");
    let n = notes(&o);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n[0].starts_with("extensions.conf:3: `autofallthrough`: autofallthrough=no is not supported"));
    assert!(n[1].starts_with("extensions.conf:4: `userscontext`:"));
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let o = load(&[
        (EXTENSIONS_CONF, "[a]\n#include \"lab/ext.conf\"\n#tryinclude \"absent.conf\"\n"),
        ("lab/ext.conf", "exten => 1,1,Echo()\n#include <more.conf>\n"),
        ("lab/more.conf", "[b]\nexten => 2,1,Echo()\n"),
    ]);
    assert!(o.errors.is_empty() && o.notes.is_empty(), "{:?} {:?}", o.errors, o.notes);
    assert_eq!(route(&o, "a", "1"), Some(Route::from(App::Echo)));
    assert_eq!(route(&o, "b", "2"), Some(Route::from(App::Echo)));
}

#[test]
fn include_errors_are_fatal() {
    let o = load(&[
        (
            EXTENSIONS_CONF,
            "[a]\n#include \"missing.conf\"\n#include \"loop.conf\"\n#include \"/etc/passwd\"\n#exec date\n;-- open",
        ),
        ("loop.conf", "#include \"loop.conf\"\n"),
    ]);
    let e: Vec<String> = o.errors.iter().map(ToString::to_string).collect();
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(e[0].starts_with("extensions.conf:2: #include missing.conf: no such file"), "{e:?}");
    assert!(e[1].starts_with("loop.conf:1: include cycle: loop.conf -> loop.conf"), "{e:?}");
    assert!(e[2].starts_with("extensions.conf:4: cannot #include \"/etc/passwd\""), "{e:?}");
    assert!(e[3].starts_with("extensions.conf:5: #exec is not supported"), "{e:?}");
    assert!(e[4].starts_with("extensions.conf:6: block comment"), "{e:?}");
}

#[test]
fn include_depth_is_limited() {
    let mut files = vec![(EXTENSIONS_CONF.to_string(), "[a]\n#include \"f0.conf\"\n".to_string())];
    for i in 0..20 {
        files.push((format!("f{i}.conf"), format!("#include \"f{}.conf\"\n", i + 1)));
    }
    let o = read(&MapLoader::from_files(files));
    assert_eq!(o.errors.len(), 1, "{:?}", o.errors);
    assert!(o.errors[0].message.contains("nests includes more than"), "{:?}", o.errors);
}

#[test]
fn templates_are_not_contexts() {
    let o = one("[tpl](!)\nexten => 1,1,Echo()\n[real](tpl)\nexten => 2,1,Echo()\n[plus](+)\nexten => 3,1,Echo()\n");
    let n = notes(&o);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n[0].starts_with("extensions.conf:1: [tpl](!) is a template"), "{n:?}");
    assert!(n[1].starts_with("extensions.conf:3: [real](tpl): inheriting"), "{n:?}");
    assert!(!o.dialplan.has_context("tpl"));
    assert!(route(&o, "real", "2").is_some() && route(&o, "plus", "3").is_some());
}

#[test]
fn h_with_real_work_is_reported() {
    let o = one("[x]\nexten => h,1,Playback(goodbye)\n");
    let n = notes(&o);
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(n[0].starts_with("extensions.conf:2: `h`: extension h of [x] runs after a call has ended"), "{n:?}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// No input panics the reader or the interpreter, and routes of what it
        /// accepted can be looked up.
        #[test]
        fn never_panics(lines in proptest::collection::vec(
            prop_oneof![
                Just("[ctx]".to_string()),
                Just("[general]".to_string()),
                Just("#include \"x.conf\"".to_string()),
                Just("include => ctx".to_string()),
                "exten => [_0-9XNZ.!\\[\\]s/-]{0,6},[0-9n+s()a-z]{0,6},[A-Za-z]{0,9}\\([^\\n]{0,12}\\)?",
                "same => [0-9n(x)+]{0,5},[A-Za-z]{0,9}\\(?[0-9,./${}:A-Z]{0,10}\\)?",
                "[^\\n]{0,30}",
            ],
            0..24,
        ), exten in "[0-9s]{0,5}") {
            let text = lines.join("\n");
            let o = load(&[(EXTENSIONS_CONF, &text), ("x.conf", &text)]);
            let _ = o.dialplan.route("ctx", &exten);
        }
    }
}
