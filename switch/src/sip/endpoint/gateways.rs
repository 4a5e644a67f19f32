//! The endpoint's side of `[sip.gateways.NAME]`: sending each
//! registration's REGISTERs in client transactions and feeding it the answers.

use super::*;

impl SipEndpoint {
    /// The address written in Via and Contact of our own REGISTERs.
    pub(super) fn gateway_local_ip(&self) -> IpAddr {
        self.settings.external_ip.unwrap_or(self.settings.listen.ip())
    }

    /// Sends the REGISTERs that are due.
    pub(super) fn poll_gateways(&mut self, now: Instant) {
        let (local, port) = (self.gateway_local_ip(), self.settings.listen.port());
        for i in 0..self.gateways.len() {
            let Some(request) = self.gateways[i].poll_request(now, local, port, &mut self.rng) else { continue };
            self.send_gateway_request(now, i, request);
        }
    }

    pub(super) fn send_gateway_request(&mut self, now: Instant, i: usize, request: Request) {
        let Some(server) = self.gateways[i].server else { return };
        let Some(branch) = request.top_via().ok().and_then(|v| v.branch().map(str::to_string)) else { return };
        self.gateways[i].sent(format!("{branch}|REGISTER"));
        self.start_client(now, request, server, None);
    }

    /// A new response (or a timeout, `None`) for a client transaction: a gateway's, if `key` is one.
    pub(super) fn on_gateway_answer(&mut self, now: Instant, key: &str, response: Option<&Response>) {
        let Some(i) = self.gateways.iter().position(|g| g.state == GatewayState::Trying { key: key.to_string() })
        else {
            return;
        };
        let name = self.gateways[i].gateway.name.clone();
        let Some(response) = response else {
            let wait = self.gateways[i].on_timeout(now, &mut self.rng);
            self.events.push_back(Event::SipGatewayTimeout { gateway: name, retry_in_ms: wait.as_millis() as u64 });
            return;
        };
        let (local, port) = (self.gateway_local_ip(), self.settings.listen.port());
        match self.gateways[i].on_response(now, response, local, port, &mut self.rng) {
            GatewayOutcome::Registered { expires } => {
                self.events.push_back(Event::SipGatewayRegistered { gateway: name, expires })
            }
            GatewayOutcome::Retry(request) => self.send_gateway_request(now, i, *request),
            GatewayOutcome::Refused { status, retry_in } => self.events.push_back(Event::SipGatewayRefused {
                gateway: name,
                status,
                retry_in_ms: retry_in.as_millis() as u64,
            }),
            GatewayOutcome::Nothing => {}
        }
    }
}
