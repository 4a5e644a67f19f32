//! Calls between SIP users: `dial(SIP/user)` makes the switch a back-to-back
//! user agent. The caller's INVITE waits (100 Trying, then the callee's
//! ringing relayed as 180) while the switch INVITEs the user's newest
//! registered contact; the callee's answer is ACKed and relayed as our 200,
//! and RTP is relayed between the two legs through the one media socket.
//! A user with no registration gets 480 with FreeSWITCH's reason,
//! `USER_NOT_REGISTERED`.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::transactions::{Client, ClientTxn};
use super::{codec_name, host_port, negotiate, SipEndpoint, USER_AGENT};
use crate::dialplan::App;
use crate::event::Event;
use crate::media::G711;
use crate::protocol::{DialError, Originate, OriginateError, SocketId};
use crate::sip::call::{CallMedia, Dialog, Negotiated, Outbound, SipCall};
use crate::sip::digest::{Authorization, Challenge};
use crate::sip::header::{Contact, Method};
use crate::sip::message::{Headers, Request, Response};
use crate::sip::sdp::SessionDescription;
use crate::sip::transaction;
use crate::sip::uri::Uri;

/// What a new outbound leg is: where it goes, who calls, what our side plays.
struct OutboundSpec {
    request_uri: String,
    to_user: String,
    /// The domain of To and From (a gateway's host); `None`: our own address.
    to_host: Option<String>,
    destination: SocketAddr,
    /// Display name and user of From.
    caller: (Option<String>, String),
    codec: Negotiated,
    local_ip: IpAddr,
    app: App,
    /// The inbound leg this one is bridged to (`dial`), none for `originate`.
    peer: Option<u32>,
    /// A gateway's username and password, to answer its challenges.
    credentials: Option<(String, String)>,
    hold: Option<std::time::Duration>,
    /// The callee registered from behind NAT: its SDP address is corrected.
    behind_nat: bool,
}

/// A SIP dial string: `SIP/user` or `SIP/gateway/exten`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipTarget {
    User(String),
    Gateway { gateway: String, exten: String },
}

impl SipTarget {
    pub fn parse(dial: &str) -> Result<SipTarget, DialError> {
        let usage = || DialError::NotSipTarget(dial.to_string());
        let (tech, rest) = dial.split_once('/').ok_or_else(usage)?;
        if !tech.eq_ignore_ascii_case("SIP") {
            return Err(usage());
        }
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+*#".contains(c));
        match rest.split_once('/') {
            None if word(rest) => Ok(SipTarget::User(rest.to_string())),
            Some((gateway, exten)) if word(gateway) && word(exten) => {
                Ok(SipTarget::Gateway { gateway: gateway.to_string(), exten: exten.to_string() })
            }
            _ => Err(usage()),
        }
    }
}

/// The user of a `SIP/user` dial target.
pub(super) fn sip_user(target: &str) -> Option<&str> {
    let (tech, user) = target.split_once('/')?;
    (tech.eq_ignore_ascii_case("SIP") && !user.is_empty() && !user.contains(['/', '@', ' '])).then_some(user)
}

/// The ACK for a non-2xx final response to our INVITE (RFC 3261 17.1.1.3):
/// the INVITE's Request-URI, top Via, From, Call-ID and CSeq number, and the
/// response's To (with the callee's tag).
pub(super) fn ack_for_failure(invite: &Request, response: &Response) -> Vec<u8> {
    let mut headers = Headers::default();
    for name in ["Via", "Max-Forwards", "From"] {
        if let Some(v) = invite.headers.get(name) {
            headers.push(name, v);
        }
    }
    if let Some(to) = response.headers.get("To") {
        headers.push("To", to);
    }
    if let Some(v) = invite.headers.get("Call-ID") {
        headers.push("Call-ID", v);
    }
    let seq = invite.cseq().map_or(1, |c| c.seq);
    headers.push("CSeq", format!("{seq} ACK"));
    Request { method: Method::Ack, uri: invite.uri.clone(), headers, body: Vec::new() }.encode()
}

impl SipEndpoint {
    /// `dial(SIP/user)` for the pending inbound call `a`.
    pub(super) fn dial(&mut self, now: Instant, a: u32, target: &str, chosen: &Negotiated) {
        let Some(user) = sip_user(target).map(str::to_string) else { return };
        let Some(binding) = self.registrar.bindings(now, &user).pop() else {
            return self.reject_inbound(now, a, 480, "USER_NOT_REGISTERED");
        };
        let Some(caller) = self.calls.get(&a) else { return };
        let (display, caller_user) = caller
            .pending
            .as_ref()
            .and_then(|r| r.from().ok())
            .map(|f| (f.display.clone(), f.uri.user.clone().unwrap_or_default()))
            .unwrap_or_default();
        let local_ip = self.local_ip_towards(caller.dialog.local_ip, binding.source.ip());
        let spec = OutboundSpec {
            request_uri: binding.contact.clone(),
            to_user: user,
            to_host: None,
            destination: binding.source,
            caller: (display, caller_user),
            codec: chosen.clone(),
            local_ip,
            app: App::Dial { target: String::new() },
            peer: Some(a),
            credentials: None,
            hold: None,
            behind_nat: binding.nat,
        };
        match self.invite_out(now, spec) {
            Ok(b) => {
                if let Some(caller) = self.calls.get_mut(&a) {
                    caller.peer = Some(b);
                }
            }
            Err(reason) => self.reject_inbound(now, a, 503, &reason.to_string()),
        }
    }

    /// `originate SIP/user` (a registered user) or `SIP/gateway/exten` (through
    /// a `[sip.gateways.NAME]`, answering its challenges with the gateway's
    /// credentials): our side plays `app`, and hangs up `hold` after the answer.
    pub fn originate(&mut self, now: Instant, request: &Originate) -> Result<u32, OriginateError> {
        let target = SipTarget::parse(&request.dial)?;
        if self.calls.len() >= self.settings.max_calls {
            return Err(OriginateError::MaxCalls(self.settings.max_calls));
        }
        let codec = Negotiated {
            codec: G711::Ulaw,
            payload_type: 0,
            dtmf: Some(101),
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let ours = self.settings.external_ip.unwrap_or(self.settings.listen.ip());
        let caller = (request.calling.1.clone(), request.calling.0.clone().unwrap_or_else(|| "switch".into()));
        let spec = match target {
            SipTarget::User(user) => {
                let binding = self
                    .registrar
                    .bindings(now, &user)
                    .pop()
                    .ok_or_else(|| OriginateError::UserNotRegistered(user.clone()))?;
                OutboundSpec {
                    request_uri: binding.contact.clone(),
                    to_user: user,
                    to_host: None,
                    destination: binding.source,
                    caller,
                    codec: Negotiated { remote: SocketAddr::new(binding.source.ip(), 0), ..codec },
                    local_ip: self.local_ip_towards(ours, binding.source.ip()),
                    app: request.app.clone(),
                    peer: None,
                    credentials: None,
                    hold: request.hold,
                    behind_nat: binding.nat,
                }
            }
            SipTarget::Gateway { gateway, exten } => {
                let g = self
                    .gateways
                    .iter()
                    .find(|g| g.gateway.name.eq_ignore_ascii_case(&gateway))
                    .ok_or_else(|| OriginateError::UnknownGateway(gateway.clone()))?;
                let server = g.server.ok_or_else(|| OriginateError::GatewayUnresolved {
                    gateway: gateway.clone(),
                    host: g.gateway.host.clone(),
                })?;
                let host =
                    if g.gateway.host.contains(':') { format!("[{}]", g.gateway.host) } else { g.gateway.host.clone() };
                let port = if g.gateway.port == 5060 { String::new() } else { format!(":{}", g.gateway.port) };
                OutboundSpec {
                    request_uri: format!("sip:{exten}@{host}{port}"),
                    to_user: exten,
                    to_host: Some(host.clone()),
                    destination: server,
                    caller: (caller.0, g.gateway.username.clone()),
                    codec: Negotiated { remote: SocketAddr::new(server.ip(), 0), ..codec },
                    local_ip: self.local_ip_towards(ours, server.ip()),
                    app: request.app.clone(),
                    peer: None,
                    credentials: Some((g.gateway.username.clone(), g.gateway.password.clone())),
                    hold: request.hold,
                    behind_nat: false,
                }
            }
        };
        let id = self.invite_out(now, spec)?;
        self.txns.settle(now, &mut self.events);
        Ok(id)
    }

    /// Our address as the far end should see it, in its address family.
    pub(super) fn local_ip_towards(&self, preferred: IpAddr, theirs: IpAddr) -> IpAddr {
        if preferred.is_ipv4() == theirs.is_ipv4() && !preferred.is_unspecified() {
            return preferred;
        }
        self.settings.external_ip.filter(|ip| ip.is_ipv4() == theirs.is_ipv4()).unwrap_or(if theirs.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        })
    }

    /// Sends an INVITE for a new outbound leg; returns its call number, or
    /// why there is none (no free RTP port).
    fn invite_out(&mut self, now: Instant, spec: OutboundSpec) -> Result<u32, OriginateError> {
        let Some(port) = self.allocate_port(now) else {
            let range = &self.settings.rtp_ports;
            return Err(OriginateError::NoMediaPort { first: *range.start(), last: *range.end() });
        };
        let b = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        let local_ip = spec.local_ip;
        let host = local_ip.to_string();
        let call_id = transaction::new_call_id(&mut self.rng, &host);
        let tag = transaction::new_tag(&mut self.rng);
        let bracketed = if local_ip.is_ipv6() { format!("[{local_ip}]") } else { host.clone() };
        let (display, caller_user) = spec.caller;
        let from_host = spec.to_host.clone().unwrap_or_else(|| bracketed.clone());
        let from_uri = match display {
            Some(d) => format!("\"{}\" <sip:{caller_user}@{from_host}>", d.replace(['"', '\\'], "")),
            None => format!("<sip:{caller_user}@{from_host}>"),
        };
        let to_uri = format!("<sip:{}@{}>", spec.to_user, spec.to_host.unwrap_or(bracketed));
        let sdp = self.sdp(local_ip, &spec.codec, port);
        let dialog = Dialog {
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            remote_tag: String::new(),
            local_uri: from_uri,
            remote_uri: to_uri,
            remote_target: spec.request_uri,
            signalling: spec.destination,
            local_ip,
            local_cseq: 0,
            remote_cseq: 0,
        };
        let strict = self.strict_rtp(now, spec.codec.remote, spec.destination.ip());
        let media = CallMedia::new(now, &spec.codec, &spec.app, b as u16, port, strict, &mut self.rng);
        let callee = SipCall {
            id: b,
            exten: spec.to_user.clone(),
            dialog,
            media,
            started: now,
            answered: false,
            confirmed: false,
            invite: None,
            pending: None,
            outbound: Some(Outbound {
                branch: String::new(),
                ack: None,
                credentials: spec.credentials,
                challenged: false,
                originated: spec.peer.is_none(),
                hold: spec.hold,
                behind_nat: spec.behind_nat,
            }),
            peer: spec.peer,
            local_sdp: sdp,
            hangup_at: None,
            hangup_cause: None,
            // The INVITE goes once the port is bound.
            awaiting_port: true,
        };
        self.by_dialog.insert((call_id, tag), b);
        self.calls.insert(b, callee);
        self.route_port(b, port);
        self.events.push_back(Event::SipCallStarted {
            call: b,
            user: spec.to_user.clone(),
            exten: spec.to_user,
            context: String::new(),
            caller: caller_user,
        });
        Ok(b)
    }

    /// (Re)sends leg `b`'s INVITE: a new CSeq and branch, with credentials
    /// when answering a challenge (RFC 3261 22.2).
    pub(super) fn send_invite(&mut self, now: Instant, b: u32, authorization: Option<(&'static str, String)>) {
        let port = self.settings.listen.port();
        let branch = transaction::new_branch(&mut self.rng);
        let Some(call) = self.calls.get_mut(&b) else { return };
        call.dialog.local_cseq += 1;
        let d = &call.dialog;
        let ours = host_port(d.local_ip, port);
        let target = Uri::parse(&d.remote_target).unwrap_or_else(|_| Uri::sip(None, d.signalling.to_string()));
        let mut headers = Headers::default();
        headers.push("Via", format!("SIP/2.0/UDP {ours};branch={branch};rport"));
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{};tag={}", d.local_uri, d.local_tag));
        headers.push("To", d.remote_uri.clone());
        headers.push("Call-ID", d.call_id.clone());
        headers.push("CSeq", format!("{} INVITE", d.local_cseq));
        headers.push("Contact", format!("<sip:switch@{ours}>"));
        headers.push("Allow", super::ALLOW);
        headers.push("User-Agent", USER_AGENT);
        if let Some((name, value)) = authorization {
            headers.push(name, value);
        }
        headers.push("Content-Type", "application/sdp");
        let invite = Request { method: Method::Invite, uri: target, headers, body: call.local_sdp.clone() };
        let destination = d.signalling;
        if let Some(out) = call.outbound.as_mut() {
            out.branch = format!("{branch}|INVITE");
        }
        self.start_client(now, invite, destination, Some(b));
    }

    /// A new response to our INVITE on callee leg `b`.
    pub(super) fn on_callee_response(&mut self, now: Instant, b: u32, response: &Response) {
        let Some(callee) = self.calls.get(&b) else { return };
        let a = callee.peer;
        match response.status {
            100 => {}
            101..=199 => {
                if let Some(a) = a {
                    self.ring_inbound(now, a);
                }
            }
            401 | 407 if self.answer_challenge(now, b, response) => {}
            200..=299 => {
                let answer = SessionDescription::parse(&response.body).ok().and_then(|sdp| negotiate(&sdp));
                let Some(callee) = self.calls.get_mut(&b) else { return };
                callee.answered = true;
                callee.confirmed = true;
                callee.media.last_received = now;
                let originated = callee.outbound.as_ref().is_some_and(|o| o.originated);
                callee.hangup_at = callee.outbound.as_ref().and_then(|o| o.hold).map(|hold| now + hold);
                if let Ok(to) = response.to() {
                    callee.dialog.remote_tag = to.tag().unwrap_or_default().to_string();
                }
                if let Ok(Some(Contact::Addrs(addrs))) = response.contact() {
                    if let Some(first) = addrs.first() {
                        callee.dialog.remote_target = first.uri.to_string();
                    }
                }
                if let Some(answer) = &answer {
                    let signalling = callee.dialog.signalling.ip();
                    let nated = callee.outbound.as_ref().is_some_and(|o| o.behind_nat)
                        || crate::sip::nat::private_behind_public(answer.remote.ip(), signalling);
                    let remote = if nated && answer.remote.port() != 0 {
                        SocketAddr::new(signalling, answer.remote.port())
                    } else {
                        answer.remote
                    };
                    callee.media.move_to(now, remote, signalling);
                    // The answer may pick another of our codecs: send what it chose.
                    callee.media.codec = answer.codec;
                    callee.media.payload_type = answer.payload_type;
                    callee.media.sender.payload_type = answer.payload_type;
                    callee.media.dtmf_payload_type = answer.dtmf;
                }
                let codec = codec_name(callee.media.codec);
                self.watch_media(b);
                let (ack, destination) = self.in_dialog_request(b, Method::Ack, false);
                if let Some(ack) = ack {
                    let bytes = ack.encode();
                    if let Some(out) = self.calls.get_mut(&b).and_then(|c| c.outbound.as_mut()) {
                        out.ack = Some(bytes.clone());
                    }
                    self.send(SocketId::Listener, destination, bytes);
                }
                self.events.push_back(Event::SipCallAnswered { call: b, codec: codec.into() });
                match a {
                    Some(a) => self.answer_inbound(now, a),
                    None if originated => self.media_tick_from(now),
                    None => self.hang_up(now, b, "the caller is gone"),
                }
            }
            status => self.callee_failed(now, b, status, &response.reason),
        }
    }

    /// Answers a 401/407 to our INVITE with the gateway's credentials, once.
    fn answer_challenge(&mut self, now: Instant, b: u32, response: &Response) -> bool {
        let Some(out) = self.calls.get_mut(&b).and_then(|c| c.outbound.as_mut()) else { return false };
        let Some((user, password)) = out.credentials.clone().filter(|_| !out.challenged) else { return false };
        let proxy = response.status == 407;
        let header = if proxy { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let Some(challenge) = response.headers.get(header).and_then(|v| Challenge::parse(v).ok()) else { return false };
        out.challenged = true;
        let uri = self.calls.get(&b).map(|c| c.dialog.remote_target.clone()).unwrap_or_default();
        let Ok(answer) = Authorization::answer(&challenge, (&user, &password), "INVITE", &uri, 1, &mut self.rng) else {
            return false;
        };
        let name = if proxy { "Proxy-Authorization" } else { "Authorization" };
        self.send_invite(now, b, Some((name, answer.to_string())));
        true
    }

    /// The callee leg `b` failed before answering: the caller gets its status.
    pub(super) fn callee_failed(&mut self, now: Instant, b: u32, status: u16, reason: &str) {
        let Some(callee) = self.forget(now, b) else { return };
        self.events.push_back(Event::SipCallRejected {
            call: b,
            exten: callee.exten.clone(),
            status,
            reason: reason.to_string(),
        });
        if let Some(a) = callee.peer {
            if let Some(caller) = self.calls.get_mut(&a) {
                caller.peer = None;
            }
            // A timeout towards the callee is "temporarily unavailable" to the caller.
            let status = if status == 408 { 480 } else { status };
            self.reject_inbound(now, a, status, reason);
        }
    }

    /// 180 Ringing to a pending inbound call.
    fn ring_inbound(&mut self, now: Instant, a: u32) {
        let Some(caller) = self.calls.get(&a) else { return };
        let Some(request) = caller.pending.as_ref() else { return };
        let (key, tag) = (caller.invite.clone().unwrap_or_default(), caller.dialog.local_tag.clone());
        let mut ringing = self.response(request, caller.dialog.signalling, 180);
        super::set_to_tag(&mut ringing, &tag);
        self.respond(now, &key, &ringing);
    }

    /// CANCEL of our INVITE on callee leg `b` (RFC 3261 9.1).
    pub(super) fn cancel(&mut self, now: Instant, b: u32) {
        let Some(callee) = self.calls.get(&b) else { return };
        let Some(out) = &callee.outbound else { return };
        let Some(Client { txn: ClientTxn::Invite { invite, .. }, .. }) = self.txns.clients.get(&out.branch) else {
            return;
        };
        let mut headers = Headers::default();
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                headers.push(name, v);
            }
        }
        headers.push("CSeq", format!("{} CANCEL", invite.cseq().map_or(1, |c| c.seq)));
        let cancel = Request { method: Method::Cancel, uri: invite.uri.clone(), headers, body: Vec::new() };
        let destination = callee.dialog.signalling;
        self.start_client(now, cancel, destination, None);
    }

    /// A retransmitted 2xx to an INVITE whose transaction is over: ACK it again.
    pub(super) fn resend_ack(&mut self, response: &Response) {
        let (Ok(call_id), Ok(from)) = (response.call_id(), response.from()) else { return };
        let Some(tag) = from.tag() else { return };
        let Some(id) = self.by_dialog.get(&(call_id.to_string(), tag.to_string())).copied() else { return };
        let Some(call) = self.calls.get(&id) else { return };
        if let Some(ack) = call.outbound.as_ref().and_then(|o| o.ack.clone()) {
            let destination = call.dialog.signalling;
            self.send(SocketId::Listener, destination, ack);
        }
    }
}
