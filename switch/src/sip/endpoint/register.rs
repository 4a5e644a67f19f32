//! REGISTER (RFC 3261 10.3) and digest authentication of every request:
//! challenges are stateless, refusals identical for unknown users and wrong
//! passwords, and only authenticated REGISTERs reach the location service.

use super::*;
use crate::deadline::DeadlineIndex;
use crate::sip::nat;

impl SipEndpoint {
    pub(super) fn on_register(&mut self, now: Instant, from: SocketAddr, key: String, request: &Request) {
        let Auth::Ok(user) = self.authenticate(now, from, request, false) else { return };
        let to_user = request.to().ok().and_then(|t| t.uri.user_unescaped());
        if to_user.as_deref() != Some(user.name.as_str()) {
            return self.refuse_registration(now, from, key, request, &user.name, 403, "To names another user");
        }
        let (Ok(call_id), Ok(cseq)) = (request.call_id(), request.cseq()) else { return };
        let contacts = match request.contact() {
            Ok(c) => c,
            Err(_) => return self.refuse_registration(now, from, key, request, &user.name, 400, "unreadable Contact"),
        };
        match contacts {
            None => {}
            Some(Contact::Star) => {
                if request.expires() != Some(0) {
                    return self.refuse_registration(
                        now,
                        from,
                        key,
                        request,
                        &user.name,
                        400,
                        "Contact: * needs Expires: 0",
                    );
                }
                let removed = self.registrar.remove_all(&user.name);
                self.prune_nat_pings(now, &user.name);
                if removed > 0 {
                    self.events
                        .push_back(Event::SipUnregistered { user: user.name.clone(), reason: "Contact: *".into() });
                }
            }
            Some(Contact::Addrs(addrs)) => {
                let via_nat = request.top_via().is_ok_and(|v| nat::via_differs(&v, from));
                let mut wanted = Vec::new();
                for addr in &addrs {
                    let asked = addr.expires().or(request.expires()).unwrap_or(self.settings.max_expires);
                    if asked > 0 && asked < self.settings.min_expires {
                        let mut response = self.response(request, from, 423);
                        response.headers.push("Min-Expires", self.settings.min_expires.to_string());
                        self.events.push_back(Event::SipRegistrationRefused {
                            user: user.name.clone(),
                            addr: from,
                            status: 423,
                            reason: format!("asked {asked} s, below min_expires"),
                        });
                        return self.reply_in_transaction(now, from, key, &response);
                    }
                    wanted.push(ContactRequest {
                        contact: addr.uri.to_string(),
                        expires: asked.min(self.settings.max_expires),
                        nat: via_nat || nat::contact_differs(&addr.uri, from),
                    });
                }
                match self.registrar.update(now, &user.name, from, call_id, cseq.seq, &wanted) {
                    Ok(refreshed) => {
                        for (c, unchanged) in wanted.iter().zip(refreshed) {
                            self.track_nat(now, &user.name, c, from);
                            // A refresh that changes nothing is counted, not
                            // logged: a storm of them would be a log flood.
                            if unchanged {
                                self.stats.refreshes += 1;
                                continue;
                            }
                            self.events.push_back(Event::SipRegistered {
                                user: user.name.clone(),
                                contact: c.contact.clone(),
                                addr: from,
                                expires: c.expires,
                            });
                        }
                    }
                    Err(Refused::OutOfOrder) => {
                        return self.refuse_registration(now, from, key, request, &user.name, 500, "out-of-order CSeq")
                    }
                    Err(Refused::TooMany) => {
                        return self.refuse_registration(now, from, key, request, &user.name, 403, "too many contacts")
                    }
                }
            }
        }
        let mut response = self.response(request, from, 200);
        for b in self.registrar.bindings(now, &user.name) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            response.headers.push("Contact", format!("<{}>;expires={left}", b.contact));
        }
        self.reply_in_transaction(now, from, key, &response);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse_registration(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: String,
        request: &Request,
        user: &str,
        status: u16,
        reason: &str,
    ) {
        self.events.push_back(Event::SipRegistrationRefused {
            user: user.to_string(),
            addr: from,
            status,
            reason: reason.to_string(),
        });
        let response = self.response(request, from, status);
        self.reply_in_transaction(now, from, key, &response);
    }

    /// Checks digest credentials; when they are missing, stale or wrong it
    /// answers statelessly and returns [`Auth::Refused`].
    pub(super) fn authenticate(&mut self, now: Instant, from: SocketAddr, request: &Request, proxy: bool) -> Auth {
        let (header, challenge_header, challenge_status) = if proxy {
            ("Proxy-Authorization", "Proxy-Authenticate", 407)
        } else {
            ("Authorization", "WWW-Authenticate", 401)
        };
        let since = now.saturating_duration_since(self.epoch);
        let method = request.method.as_str().to_string();
        let credentials = request
            .headers
            .get_all(header)
            .filter_map(|v| Authorization::parse(v).ok())
            .find(|a| a.realm == self.settings.realm);
        let mut stale = false;
        if let Some(auth) = credentials {
            match self.nonces.check(&auth.nonce, since, from.ip()) {
                NonceCheck::Valid => {
                    let exempt = self.registrar.is_registered_from(now, &auth.username, from.ip());
                    if !exempt && self.guard.user_throttled(now, &auth.username) {
                        // Silence, as for a throttled source: a guesser spread
                        // over many addresses learns nothing, and the phone
                        // registered from its own address is not locked out.
                        self.drop_datagram(now, from, "user throttled after failed authentication".into());
                        return Auth::Refused;
                    }
                    let user = self.users.get(&auth.username).map(|&i| self.settings.users[i].clone());
                    // Unknown users and wrong passwords get the same 403, so
                    // scanners (svwar) cannot tell which names exist.
                    match user {
                        Some(user) if auth.verify(&method, &user.password) => {
                            let lifetime = self.nonces.lifetime();
                            match self.nonce_counts.accept(&auth.nonce, auth.nc.as_deref(), since, lifetime) {
                                CountCheck::Fresh => return Auth::Ok(user),
                                // A replayed request (or one older than the
                                // counts remembered) gets a fresh challenge;
                                // the client that owns the password just answers it.
                                CountCheck::Replayed | CountCheck::Forgotten => stale = true,
                            }
                        }
                        _ => {
                            self.events.push_back(Event::SipAuthFailed {
                                method,
                                user: auth.username.clone(),
                                addr: from,
                                status: 403,
                            });
                            self.guard.failure(now, from.ip(), &auth.username, exempt, &mut self.events);
                            let response = self.response(request, from, 403);
                            self.reply_stateless(from, &response);
                            return Auth::Refused;
                        }
                    }
                }
                NonceCheck::Stale => stale = true,
                NonceCheck::Invalid => {}
            }
        }
        let nonce = self.nonces.issue(since, from.ip(), &mut self.rng);
        let challenge = Challenge::new(&self.settings.realm, nonce, stale);
        let mut response = self.response(request, from, challenge_status);
        response.headers.push(challenge_header, challenge.to_string());
        // A challenge is the first half of every digest exchange, not a
        // failure: counted (`show stats`), never an event, or each probe
        // of a scanner and each REGISTER of a storm would be a log line.
        self.stats.challenges += 1;
        self.reply_stateless(from, &response);
        Auth::Refused
    }
}

impl SipEndpoint {
    /// Keeps the keepalive schedule of a binding in step with its REGISTER,
    /// and reports a phone newly seen behind NAT (or behind a new mapping).
    fn track_nat(&mut self, now: Instant, user: &str, c: &ContactRequest, from: SocketAddr) {
        let key = (user.to_string(), c.contact.clone());
        self.prune_nat_pings(now, user);
        if !c.nat || c.expires == 0 {
            self.nat_pings.remove(&key);
            return;
        }
        let known = self.nat_pings.get(&key).map(|(source, _)| *source);
        if known != Some(from) {
            self.events.push_back(Event::SipNatDetected {
                user: user.to_string(),
                contact: c.contact.clone(),
                source: from,
            });
        }
        let interval = Duration::from_secs(u64::from(self.settings.nat_keepalive));
        // A refresh from the same mapping keeps the cadence; a new mapping starts one.
        let next = match self.nat_pings.get(&key) {
            _ if interval.is_zero() => None,
            Some((source, Some(next))) if *source == from => Some(*next),
            _ => Some(now + interval),
        };
        self.nat_pings.insert(key, (from, next));
    }

    /// Forgets the keepalives of `user`'s bindings that are gone, so the
    /// schedule stays bounded by the registrar.
    pub(super) fn prune_nat_pings(&mut self, now: Instant, user: &str) {
        // Every REGISTER comes here; most users have no keepalives to prune.
        let keys = self.nat_pings.of_user(user);
        if keys.is_empty() {
            return;
        }
        let bindings = self.registrar.bindings(now, user);
        for key in keys {
            if !bindings.iter().any(|b| b.contact == key.1) {
                self.nat_pings.remove(&key);
            }
        }
    }

    /// Kamailio's natping: an OPTIONS from the signalling socket to each
    /// NATed binding's reach address keeps the NAT's UDP mapping open. The
    /// answer is not awaited: a silent phone stays registered until its
    /// binding expires, as a REGISTER refresh is what proves it gone.
    pub(super) fn nat_keepalives(&mut self, now: Instant) {
        let due = self.nat_pings.due(now);
        let interval = Duration::from_secs(u64::from(self.settings.nat_keepalive));
        for key in due {
            let live = self
                .registrar
                .bindings(now, &key.0)
                .into_iter()
                .find(|b| b.contact == key.1 && b.nat)
                .map(|b| b.source);
            match live {
                Some(reach) if !interval.is_zero() => {
                    self.send_keepalive(&key.1, reach);
                    self.nat_pings.insert(key, (reach, Some(now + interval)));
                }
                _ => {
                    self.nat_pings.remove(&key);
                }
            }
        }
    }

    fn send_keepalive(&mut self, contact: &str, reach: SocketAddr) {
        let ours = self.settings.external_ip.unwrap_or(self.settings.listen.ip());
        let ip = self.local_ip_towards(ours, reach.ip());
        let host = host_port(ip, self.settings.listen.port());
        let branch = transaction::new_branch(&mut self.rng);
        let tag = transaction::new_tag(&mut self.rng);
        let call_id = transaction::new_call_id(&mut self.rng, &ip.to_string());
        let Ok(uri) = Uri::parse(contact) else { return };
        let bracketed = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
        let mut headers = Headers::default();
        headers.push("Via", format!("SIP/2.0/UDP {host};branch={branch};rport"));
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("<sip:switch@{bracketed}>;tag={tag}"));
        headers.push("To", format!("<{contact}>"));
        headers.push("Call-ID", call_id);
        headers.push("CSeq", "1 OPTIONS");
        headers.push("User-Agent", USER_AGENT);
        let options = Request { method: Method::Options, uri, headers, body: Vec::new() };
        self.send(SocketId::Listener, reach, options.encode());
    }
}

/// The keepalive schedule of NATed bindings: (user, contact) -> (reach
/// address, next OPTIONS), indexed by time so that a switch with many phones
/// behind NAT does not walk them all on every turn.
#[derive(Debug, Default)]
pub(super) struct NatPings {
    entries: BTreeMap<(String, String), (SocketAddr, Option<Instant>)>,
    schedule: DeadlineIndex<(String, String)>,
}

impl NatPings {
    pub(super) fn get(&self, key: &(String, String)) -> Option<&(SocketAddr, Option<Instant>)> {
        self.entries.get(key)
    }

    pub(super) fn insert(&mut self, key: (String, String), value: (SocketAddr, Option<Instant>)) {
        let old = self.entries.insert(key.clone(), value).and_then(|(_, at)| at);
        self.schedule.set(&key, old, value.1);
    }

    pub(super) fn remove(&mut self, key: &(String, String)) {
        if let Some((_, at)) = self.entries.remove(key) {
            self.schedule.set(key, at, None);
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.schedule.next()
    }

    /// The keepalives due, in (user, contact) order.
    pub(super) fn due(&self, now: Instant) -> Vec<(String, String)> {
        let mut due = self.schedule.due(now);
        due.sort_unstable();
        due
    }

    pub(super) fn of_user(&self, user: &str) -> Vec<(String, String)> {
        let from = (user.to_string(), String::new());
        self.entries.range(from..).map(|(k, _)| k).take_while(|(u, _)| u == user).cloned().collect()
    }
}
