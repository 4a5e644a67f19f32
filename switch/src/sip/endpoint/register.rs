//! REGISTER (RFC 3261 10.3) and digest authentication of every request:
//! challenges are stateless, refusals identical for unknown users and wrong
//! passwords, and only authenticated REGISTERs reach the location service.

use super::*;

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
                if self.registrar.remove_all(&user.name) > 0 {
                    self.events
                        .push_back(Event::SipUnregistered { user: user.name.clone(), reason: "Contact: *".into() });
                }
            }
            Some(Contact::Addrs(addrs)) => {
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
                    });
                }
                match self.registrar.update(now, &user.name, from, call_id, cseq.seq, &wanted) {
                    Ok(()) => {
                        for c in &wanted {
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
                    let user = self.settings.users.iter().find(|u| u.name == auth.username).cloned();
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
        self.stats.challenges += 1;
        let user = request.from().ok().and_then(|f| f.uri.user_unescaped()).unwrap_or_default();
        self.events.push_back(Event::SipAuthFailed { method, user, addr: from, status: challenge_status });
        self.reply_stateless(from, &response);
        Auth::Refused
    }
}
