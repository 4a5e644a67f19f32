//! The SIP message layer against the RFC 4475 torture tests.
//!
//! Every `.dat` file of the RFC is listed in [`EXPECTATIONS`] with what must
//! happen to it: section 3.1.1 (valid) must parse and pass the mandatory
//! header checks; each section 3.1.2 (invalid) message must be caught either
//! by the parser or by the named typed check of its damaged header; the
//! semantic tests of sections 3.2-3.4 are syntactically valid and must parse.
//! No file may panic, and a file missing from the table fails the test, so a
//! new capture cannot be skipped silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switch::sip::header::{Contact, HeaderError, Method, SipDate};
use switch::sip::message::{same_name, Headers, InvalidRequest, Message, ParseError, Request, Response};
use switch::sip::sdp::SessionDescription;
use switch::sip::uri::Scheme;

/// The 49 messages of RFC 4475, kept byte-exact in the repository
/// (provenance in captures/README.md).
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");

/// Where an invalid message must be caught, when the parser accepts it.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// `Request::validate_mandatory` (the caller answers 400).
    Mandatory,
    Vias,
    To,
    From,
    CSeq,
    Contact,
    Date,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Parses, and the mandatory headers (requests) or the headers a client
    /// transaction needs (responses) are all readable.
    Valid,
    /// `Message::parse` refuses it.
    ParseFails,
    /// Parses, but the named check refuses it.
    Fails(Check),
}

use Check::*;
use Expect::*;

const EXPECTATIONS: &[(&str, Expect)] = &[
    // 3.1.1 Valid messages.
    ("wsinv", Valid),
    ("intmeth", Valid),
    ("esc01", Valid),
    ("escnull", Valid),
    ("esc02", Valid),
    ("lwsdisp", Valid),
    ("longreq", Valid),
    ("dblreq", Valid),
    ("semiuri", Valid),
    ("transports", Valid),
    ("mpart01", Valid),
    ("unreason", Valid),
    ("noreason", Valid),
    // 3.1.2 Invalid messages.
    ("badinv01", Fails(Vias)),        // Via "192.0.2.15;;,;,," (Contact ";;;;" too)
    ("clerr", ParseFails),            // Content-Length 9999 > body
    ("ncl", ParseFails),              // Content-Length -999
    ("scalar02", Fails(CSeq)),        // CSeq 36893488147419103232
    ("scalarlg", Fails(CSeq)),        // response CSeq 9292394834772304023312
    ("quotbal", Fails(To)),           // unterminated quote in To display name
    ("ltgtruri", ParseFails),         // <> around the Request-URI
    ("lwsruri", ParseFails),          // "sip:user@example.com; lr" in the request line
    ("lwsstart", ParseFails),         // two SPs between request-line elements
    ("trws", ParseFails),             // SPs after SIP/2.0
    ("escruri", Fails(Mandatory)),    // headers (?Route=...) in the Request-URI
    ("baddate", Fails(Date)),         // Date in EST, not GMT
    ("regbadct", Fails(Contact)),     // Contact URI with '?' not in <>
    ("badaspec", Fails(To)),          // spaces inside <...>
    ("baddn", Fails(From)),           // unquoted display name with ','
    ("badvers", ParseFails),          // SIP/7.0
    ("mismatch01", Fails(Mandatory)), // OPTIONS with CSeq INVITE
    ("mismatch02", Fails(Mandatory)), // NEWMETHOD with CSeq INVITE
    ("bigcode", ParseFails),          // status 4294967301
    // 3.2 Transaction layer semantics: syntactically valid.
    ("badbranch", Valid),
    // 3.3 Application layer semantics.
    ("insuf", Fails(Mandatory)), // no To, From, Call-ID, Max-Forwards
    ("unkscm", Valid),           // unknown Request-URI scheme: 416 is the caller's
    ("novelsc", Valid),
    ("unksm2", Valid),
    ("bext01", Valid), // Require unknown: 420 is the caller's
    ("invut", Valid),  // unknown Content-Type: 415 is the caller's
    ("regaut01", Valid),
    ("multi01", Fails(Mandatory)), // two To, two From, two Call-ID, two CSeq
    ("mcl01", ParseFails),         // two disagreeing Content-Length
    ("bcast", Valid),
    ("zeromf", Valid), // Max-Forwards 0: 483 is the caller's
    ("cparam01", Valid),
    ("cparam02", Valid),
    ("regescrt", Valid),
    ("sdp01", Valid),
    // 3.4 Backward compatibility.
    ("inv2543", Valid), // RFC 2543 INVITE: no Max-Forwards, no branch
];

fn files() -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(DIR);
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!("RFC 4475 messages missing from the repository: looked in {} ({e})", dir.display());
    });
    let mut files = BTreeMap::new();
    for entry in entries {
        let path: PathBuf = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "dat") {
            let name = path.file_stem().expect("file name").to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).expect("readable capture"));
        }
    }
    assert!(!files.is_empty(), "no .dat files in {}", dir.display());
    files
}

fn file(name: &str) -> Vec<u8> {
    let path = Path::new(DIR).join(format!("{name}.dat"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("RFC 4475 message missing from the repository: looked for {} ({e})", path.display()))
}

fn request(name: &str) -> Request {
    match Message::parse(&file(name)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{name}: expected a request, got {other:?}"),
    }
}

fn response(name: &str) -> Response {
    match Message::parse(&file(name)) {
        Ok(Message::Response(r)) => r,
        other => panic!("{name}: expected a response, got {other:?}"),
    }
}

/// Runs every accessor (results ignored): none may panic on any capture.
fn exercise(message: &Message) {
    let _ = (message.vias(), message.top_via(), message.from(), message.to(), message.call_id());
    let _ = (message.cseq(), message.contact(), message.expires(), message.max_forwards(), message.content_type());
    for (_, value) in message.headers().iter() {
        let _ = (Contact::parse(value), SipDate::parse(value));
    }
    if let Message::Request(r) = message {
        let _ = r.validate_mandatory();
        let _ = Response::to_request(r, 400, "Bad Request").encode();
    }
    let _ = SessionDescription::parse(message.body());
    let _ = Message::parse(&message.encode());
}

/// The check an invalid message must fail, as a Result so the failure
/// message can show what was accepted.
fn run_check(message: &Message, check: Check) -> Result<String, String> {
    let h = message.headers();
    let outcome = match check {
        Mandatory => match message {
            Message::Request(r) => r.validate_mandatory().map(|m| format!("{m:?}")).map_err(|e| e.to_string()),
            Message::Response(_) => Err("not a request".into()),
        },
        Vias => h.vias().map(|v| format!("{v:?}")).map_err(|e| e.to_string()),
        To => h.to().map(|v| v.to_string()).map_err(|e| e.to_string()),
        From => h.from().map(|v| v.to_string()).map_err(|e| e.to_string()),
        CSeq => h.cseq().map(|v| v.to_string()).map_err(|e| e.to_string()),
        Contact => h.contact().map(|v| format!("{v:?}")).map_err(|e| e.to_string()),
        Date => h
            .get("Date")
            .ok_or_else(|| "no Date".to_string())
            .and_then(|d| SipDate::parse(d).map(|d| d.to_string()).map_err(|e| e.to_string())),
    };
    // Invert: the caller wants to know whether the check *refused* it.
    match outcome {
        Ok(accepted) => Err(accepted),
        Err(reason) => Ok(reason),
    }
}

fn assert_valid(name: &str, message: &Message) {
    match message {
        Message::Request(r) => {
            if let Err(e) = r.validate_mandatory() {
                panic!("{name}: valid request failed validate_mandatory: {e}");
            }
        }
        Message::Response(r) => {
            assert!(r.vias().is_ok_and(|v| !v.is_empty()), "{name}: Via {:?}", r.vias());
            assert!(r.from().is_ok(), "{name}: From {:?}", r.from());
            assert!(r.to().is_ok(), "{name}: To {:?}", r.to());
            assert!(r.call_id().is_ok(), "{name}: Call-ID {:?}", r.call_id());
            assert!(r.cseq().is_ok(), "{name}: CSeq {:?}", r.cseq());
        }
    }
    assert!(message.contact().is_ok(), "{name}: Contact {:?}", message.contact());
    if let Some(date) = message.headers().get("Date") {
        assert!(SipDate::parse(date).is_ok(), "{name}: Date {date:?}");
    }
    // What we parsed, we can write and read back unchanged (modulo the
    // Content-Length that encode rewrites).
    assert_eq!(Message::parse(&message.encode()), Ok(with_content_length(message)), "{name}: encode/parse round trip");
}

/// `message` as encode writes it: one Content-Length, with the body's
/// length, where the first one was (or last).
fn with_content_length(message: &Message) -> Message {
    let mut expected = message.clone();
    let length = expected.body().len().to_string();
    let mut fields = Headers::new();
    let mut seen = false;
    for (name, value) in message.headers().iter() {
        if !same_name(name, "Content-Length") {
            fields.push(name, value);
        } else if !seen {
            seen = true;
            fields.push(name, length.as_str());
        }
    }
    if !seen {
        fields.push("Content-Length", length);
    }
    *expected.headers_mut() = fields;
    expected
}

#[test]
fn every_capture_meets_its_expectation() {
    let files = files();
    let table: BTreeMap<&str, Expect> = EXPECTATIONS.iter().copied().collect();
    assert_eq!(table.len(), EXPECTATIONS.len(), "duplicate entry in EXPECTATIONS");
    let mut problems = Vec::new();
    for name in files.keys() {
        if !table.contains_key(name.as_str()) {
            problems.push(format!("{name}: no expectation in the table"));
        }
    }
    for (name, expect) in &table {
        let Some(bytes) = files.get(*name) else {
            problems.push(format!("{name}: listed but no {name}.dat in {DIR}"));
            continue;
        };
        let parsed = Message::parse(bytes);
        if let Ok(message) = &parsed {
            exercise(message);
        }
        match (expect, parsed) {
            (Valid, Ok(message)) => assert_valid(name, &message),
            (ParseFails, Err(_)) => {}
            (Fails(check), Ok(message)) => {
                if let Err(accepted) = run_check(&message, *check) {
                    problems.push(format!("{name}: {check:?} should refuse it but accepted {accepted}"));
                }
            }
            (expect, Ok(_)) => problems.push(format!("{name}: expected {expect:?}, but it parsed")),
            (expect, Err(e)) => problems.push(format!("{name}: expected {expect:?}, but parsing failed: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn wsinv_short_tortuous_invite() {
    let r = request("wsinv");
    assert_eq!(r.method, Method::Invite);
    assert!(r.uri.params.has("unknownparam"));
    assert_eq!(r.call_id(), Ok("wsinv.ndaksdj@192.0.2.1"));
    assert_eq!(r.max_forwards(), Some(68));
    let cseq = r.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let to = r.to().unwrap();
    assert_eq!(to.uri.user.as_deref(), Some("vivekg"));
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = r.from().unwrap();
    assert_eq!(from.display.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    let vias = r.vias().unwrap();
    let hosts: Vec<_> = vias.iter().map(|v| (v.transport.as_str(), v.host.as_str())).collect();
    assert_eq!(hosts, [("UDP", "192.0.2.2"), ("TCP", "spindle.example.com"), ("UDP", "192.168.255.111")]);
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let Ok(Some(Contact::Addrs(contacts))) = r.contact() else { panic!("contact {:?}", r.contact()) };
    assert_eq!(contacts[0].display.as_deref(), Some(r#"Quoted string """#));
    assert_eq!(contacts[0].params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(contacts[0].params.get("secondparam"), Some(None));
    assert_eq!(contacts[0].params.get("q"), Some(Some("0.33")));
    assert_eq!(r.headers.get("NewFangledHeader"), Some("newfangled value continued newfangled value"));
    assert_eq!(r.headers.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(r.headers.get("Subject"), Some(""));
    assert_eq!(r.body.len(), 150);
    let sdp = SessionDescription::parse(&r.body).unwrap();
    assert_eq!(sdp.media.len(), 2);
    assert_eq!(sdp.media[0].payload_types(), [0, 12]);
}

#[test]
fn intmeth_unusual_characters() {
    let r = request("intmeth");
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(r.method, Method::Other(method.into()));
    assert_eq!(r.method.as_str(), method);
    assert_eq!(r.uri.user.as_deref(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
    assert_eq!(r.uri.password.as_deref(), Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
    assert_eq!(r.uri.host, "example.com");
    assert_eq!(r.to().unwrap().display.as_deref(), Some("BEL:\x07 NUL:\x00 DEL:\x7f"));
    assert_eq!(r.from().unwrap().display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(r.from().unwrap().tag(), Some("_token~1'+`*%!-."));
    assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(r.call_id(), Ok(r#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#));
    assert_eq!(r.max_forwards(), Some(255));
    assert_eq!(r.cseq().unwrap().method, r.method);
}

#[test]
fn esc01_escaped_user() {
    let r = request("esc01");
    assert_eq!(r.uri.user.as_deref(), Some("sips%3Auser%40example.com"));
    assert_eq!(r.uri.user_unescaped().as_deref(), Some("sips:user@example.com"));
    assert_eq!(r.uri.host, "example.net");
    assert_eq!(r.to().unwrap().uri.user_unescaped().as_deref(), Some("user"));
    assert_eq!(r.from().unwrap().uri.user_unescaped().as_deref(), Some("I have spaces"));
    assert_eq!(r.content_type(), Some("application/sdp"));
    let Ok(Some(Contact::Addrs(contacts))) = r.contact() else { panic!("contact {:?}", r.contact()) };
    assert!(contacts[0].uri.params.has("%6C%72"));
}

#[test]
fn escnull_and_esc02() {
    let r = request("escnull");
    assert_eq!(r.to().unwrap().uri.user_unescaped().as_deref(), Some("null-\0-null"));
    assert!(matches!(r.contact(), Ok(Some(Contact::Addrs(a))) if a.len() == 2));
    let r = request("esc02");
    // An escaped method is a different (unknown) method, and C%6Fntact is not Contact.
    assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
    assert!(matches!(r.contact(), Ok(Some(Contact::Addrs(a))) if a.len() == 2));
    assert_eq!(r.headers.get("C%6Fntact"), Some("<sip:alias2@host2.example.com>"));
}

#[test]
fn lwsdisp_longreq_dblreq_semiuri() {
    assert_eq!(request("lwsdisp").from().unwrap().display.as_deref(), Some("caller"));

    let r = request("longreq");
    let vias = r.vias().unwrap();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host, "sip33.example.com");
    assert_eq!(vias[33].received(), Some("192.0.2.5"));
    assert_eq!(r.to().unwrap().uri.port, Some(6000));
    assert_eq!(r.body.len(), 150);

    // Two requests in one datagram: the second is not part of the first.
    let r = request("dblreq");
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
    assert_eq!(r.call_id(), Ok("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));

    let r = request("semiuri");
    assert_eq!(r.uri.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(r.uri.host, "example.com");
    assert!(r.uri.params.is_empty());
}

#[test]
fn transports_mpart01_responses() {
    let transports: Vec<_> = request("transports").vias().unwrap().into_iter().map(|v| v.transport).collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

    let r = request("mpart01");
    assert_eq!(r.method, Method::Message);
    assert_eq!(r.body.len(), 553);
    assert_eq!(r.content_type(), Some("multipart/mixed"));
    assert_eq!(r.top_via().unwrap().rport(), Some(None));

    let r = response("unreason");
    assert_eq!(r.status, 200);
    assert!(r.reason.starts_with("= 2**3 * 5**2 "), "{:?}", r.reason);
    assert!(r.reason.contains('\u{43d}'), "UTF-8 reason kept: {:?}", r.reason);
    let r = response("noreason");
    assert_eq!((r.status, r.reason.as_str()), (100, ""));
}

#[test]
fn invalid_ones_fail_for_the_right_reason() {
    let parse_error = |name: &str| Message::parse(&file(name)).err();
    assert!(matches!(parse_error("clerr"), Some(ParseError::BodyTruncated { declared: 9999, .. })));
    assert_eq!(parse_error("ncl"), Some(ParseError::BadContentLength));
    assert_eq!(parse_error("mcl01"), Some(ParseError::ConflictingContentLength));
    assert!(matches!(parse_error("ltgtruri"), Some(ParseError::BadRequestUri(_))));
    assert_eq!(parse_error("badvers"), Some(ParseError::BadVersion));
    assert_eq!(parse_error("bigcode"), Some(ParseError::BadStatusCode));
    for name in ["lwsruri", "lwsstart", "trws"] {
        assert!(matches!(parse_error(name), Some(ParseError::BadRequestLine | ParseError::BadVersion)), "{name}");
    }
    assert!(matches!(
        request("mismatch01").validate_mandatory(),
        Err(InvalidRequest::CSeqMethodMismatch { request: Method::Options, cseq: Method::Invite })
    ));
    assert!(matches!(request("mismatch02").validate_mandatory(), Err(InvalidRequest::CSeqMethodMismatch { .. })));
    assert_eq!(request("escruri").validate_mandatory(), Err(InvalidRequest::RequestUriHeaders));
    assert!(matches!(
        request("insuf").validate_mandatory(),
        Err(InvalidRequest::Header { error: HeaderError::Missing(_), .. })
    ));
    assert!(matches!(
        request("multi01").validate_mandatory(),
        Err(InvalidRequest::Header { error: HeaderError::Duplicate(_), .. })
    ));
    assert!(request("badinv01").contact().is_err());
    assert_eq!(request("scalar02").expires(), None);
    assert_eq!(request("quotbal").to().err(), Some(HeaderError::UnterminatedQuote));
    assert_eq!(request("regbadct").contact().err(), Some(HeaderError::BadAddrSpec));
    assert_eq!(request("baddn").from().err(), Some(HeaderError::BadDisplayName));
}

#[test]
fn semantic_tests_parse_into_the_right_values() {
    assert_eq!(request("unkscm").uri.scheme, Scheme::Other("nobodyKnowsThisScheme".into()));
    assert_eq!(request("novelsc").uri.scheme, Scheme::Other("soap.beep".into()));
    assert_eq!(request("unksm2").to().unwrap().uri.scheme, Scheme::Other("isbn".into()));
    assert_eq!(request("zeromf").validate_mandatory().unwrap().max_forwards, Some(0));
    assert_eq!(request("inv2543").validate_mandatory().unwrap().max_forwards, None);
    assert_eq!(request("badbranch").top_via().unwrap().branch(), Some("z9hG4bK"));
    let Ok(Some(Contact::Addrs(c))) = request("cparam01").contact() else { panic!("cparam01 contact") };
    assert!(c[0].params.has("unknownparam") && c[0].uri.params.is_empty());
    let Ok(Some(Contact::Addrs(c))) = request("cparam02").contact() else { panic!("cparam02 contact") };
    assert!(c[0].uri.params.has("unknownparam") && c[0].params.is_empty());
    let Ok(Some(Contact::Addrs(c))) = request("regescrt").contact() else { panic!("regescrt contact") };
    assert_eq!(c[0].uri.headers.as_deref(), Some("Route=%3Csip:sip.example.com%3E"));
    let vias = response("bcast").vias().unwrap();
    assert_eq!(vias[1].host, "255.255.255.255");
}
