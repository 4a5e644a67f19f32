//! The event loops. Each protocol core runs in a loop of its own that owns
//! the core and its sockets from some [`Net`], feeds it datagrams and timer
//! expiries, sends what it asks to send and sleeps until its next deadline;
//! the task that started them answers the operator's commands by running
//! jobs inside them. Live, on a multi-threaded runtime, the loops use
//! different cores; in simnet a host has one thread and their interleaving
//! is deterministic. Live and simulated runs share this code as is.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{self, Diagnostic, Host, LoadedConfig, SourceLoader};
use crate::control::text;
use crate::event::{Event, EventSink};
use crate::iax2::endpoint::Endpoint;
use crate::net::{DatagramSocket, Net};
use crate::protocol::{
    dial_has_tech, DialError, Originate, OriginateError, Placement, ProtocolCore, ResolvedHosts, SocketId,
    SocketRequest,
};
use crate::sip::endpoint::SipEndpoint;
use crate::state::{Persister, StateStore};

/// Largest datagram we accept; anything longer is truncated by the socket and
/// then rejected by the parser.
const MAX_DATAGRAM: usize = 65_535;

/// What an operator (control socket, scenario script) can ask of a running switch.
#[derive(Debug)]
pub enum Command {
    /// Re-read the configuration from the loader; keep running on failure.
    Reload,
    /// `iax2 show peers`.
    ShowPeers(oneshot::Sender<String>),
    /// `iax2 show registry`.
    ShowRegistry(oneshot::Sender<String>),
    /// Counters of dropped and handled traffic.
    ShowStats(oneshot::Sender<String>),
    /// `iax2 show channels`.
    ShowChannels(oneshot::Sender<String>),
    /// `sip show registrations`.
    ShowSipRegistrations(oneshot::Sender<String>),
    /// `sip show channels`.
    ShowSipChannels(oneshot::Sender<String>),
    /// `sip show gateways`.
    ShowSipGateways(oneshot::Sender<String>),
    /// `sip show bans`.
    ShowSipBans(oneshot::Sender<String>),
    /// `sip unban IP`: lift a ban (or a penalty silence) on a source.
    SipUnban { source: IpAddr, reply: oneshot::Sender<String> },
    /// `iax2 show bans`.
    ShowIaxBans(oneshot::Sender<String>),
    /// `iax2 unban IP`.
    IaxUnban { source: IpAddr, reply: oneshot::Sender<String> },
    /// Place `count` calls; the answer says how many went out.
    Originate { request: Originate, count: u32, reply: oneshot::Sender<String> },
    /// Hang up every call.
    HangupAll(oneshot::Sender<String>),
    /// Stop the loop and return.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration is invalid:\n{}", render(.0))]
    Config(Vec<Diagnostic>),
    #[error("cannot bind UDP {addr}: {source}. {}Set bindaddr/bindport in iax.conf.", bind_hint(.source))]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot bind UDP {addr} for SIP {what}: {source}. {}Set {what} in [sip] of switch.toml.", bind_hint(.source))]
    BindSip { addr: SocketAddr, what: &'static str, source: std::io::Error },
}

/// What usually causes a bind error, in the operator's words.
fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "Is another process using the port? ",
        std::io::ErrorKind::PermissionDenied => "Ports below 1024 need privileges (CAP_NET_BIND_SERVICE). ",
        _ if is_address_family_error(e) => {
            "This host does not have that address (or has no IPv6); listen on one it has. "
        }
        _ => "",
    }
}

/// Binds `requested`. Where the host has no IPv6, the IPv6 wildcard `[::]`
/// falls back to the IPv4 one on the same port, loudly (a warning and a
/// `listener_fallback` event): the operator asked for every address and gets
/// every address there is. Any other failure is returned, for the caller to
/// stop naming the listener, the address and the OS error.
pub async fn bind_listener<N: Net>(
    net: &N,
    listener: &str,
    requested: SocketAddr,
    events: &mut impl EventSink,
) -> std::io::Result<(N::Socket, SocketAddr)> {
    let error = match net.bind_udp(requested).await {
        Ok(socket) => return Ok((socket, requested)),
        Err(e) => e,
    };
    if requested.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) || !is_address_family_error(&error) {
        return Err(error);
    }
    let bound = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), requested.port());
    let socket = net.bind_udp(bound).await?;
    tracing::warn!("{listener}: cannot bind {requested} ({error}): no IPv6 on this host; listening on {bound} instead");
    events.emit(&Event::ListenerFallback {
        listener: listener.to_string(),
        requested,
        bound,
        error: error.to_string(),
    });
    Ok((socket, bound))
}

/// What an OS says when asked to bind an IPv6 address it does not have:
/// EAFNOSUPPORT (IPv6 disabled or not compiled in) or EADDRNOTAVAIL.
pub fn is_address_family_error(e: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97; // Linux
    e.kind() == std::io::ErrorKind::AddrNotAvailable
        || e.kind() == std::io::ErrorKind::Unsupported
        || (cfg!(target_os = "linux") && e.raw_os_error() == Some(EAFNOSUPPORT))
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
}

/// Everything one switch instance needs to run.
pub struct SwitchSetup<L: SourceLoader, S: EventSink> {
    /// Where `iax.conf` and `switch.toml` are read from (a directory live, a map in simnet).
    pub loader: L,
    /// Seed of the one RNG all protocol randomness comes from.
    pub seed: u64,
    pub events: S,
    pub commands: mpsc::Receiver<Command>,
    /// Where `[state] dir` lives (a directory live, memory in simnet); `None`:
    /// this run keeps no state, whatever `switch.toml` says.
    pub state: Option<Arc<dyn StateStore>>,
}

/// Runs a switch until [`Command::Shutdown`] or the command channel closes.
pub async fn run<N: Net, L: SourceLoader, S: EventSink>(net: N, mut setup: SwitchSetup<L, S>) -> Result<(), RunError> {
    let loaded = config::load(&setup.loader).map_err(RunError::Config)?;
    let iax_listener = match loaded.switch.iax2 {
        true => Some(
            bind_listener(&net, "iax.conf bindaddr", loaded.iax.general.bind, &mut setup.events)
                .await
                .map_err(|source| RunError::Bind { addr: loaded.iax.general.bind, source })?,
        ),
        false => None,
    };
    let resolved = resolve_hosts(&net, &loaded).await;

    let mut cores = Cores { iax: None, sip: None };
    if let Some(settings) = &loaded.switch.sip {
        let (listener, bound) = bind_listener(&net, "[sip] listen", settings.listen, &mut setup.events)
            .await
            .map_err(|source| RunError::BindSip { addr: settings.listen, what: "listen", source })?;
        // Its own stream of the one seed: SIP traffic does not shift IAX2's random values.
        let mut rng = ChaCha20Rng::seed_from_u64(setup.seed);
        rng.set_stream(1);
        let mut sip = SipEndpoint::new(Arc::new(settings.clone()), &resolved, rng, Instant::now().into_std());
        sip.set_dialplan(loaded.switch.dialplan.clone());
        // Media follows the listener to IPv4 when `[::]` fell back.
        let media_ip =
            if bound.ip() != settings.listen.ip() && settings.rtp.is_unspecified() { bound.ip() } else { settings.rtp };
        cores.sip = Some(Slot { core: sip, sockets: Sockets::new(listener, bound, media_ip) });
    }

    let state_dir = loaded.switch.state_dir.clone();
    // What it keeps is the IAX2 registrar's: nothing to keep without IAX2.
    let mut persister = persister(&loaded, setup.state.clone()).filter(|_| iax_listener.is_some());
    if let Some((listener, bound)) = iax_listener {
        let rng = ChaCha20Rng::seed_from_u64(setup.seed);
        let mut endpoint = Endpoint::new(Arc::new(loaded.iax.clone()), resolved, rng, Instant::now().into_std());
        endpoint.set_unix_time(Instant::now().into_std(), net.unix_time());
        endpoint.set_dialplan(loaded.switch.dialplan.clone());
        if let Some(p) = &mut persister {
            p.restore(&mut endpoint, Instant::now().into_std());
        }
        cores.iax = Some(Slot { core: endpoint, sockets: Sockets::new(listener, bound, bound.ip()) });
    }
    for sockets in cores.each() {
        setup.events.emit(&Event::Started { bind: sockets.bound });
    }
    setup.events.emit(&config_loaded(&loaded));

    // One event loop per protocol core, each owning its core and sockets:
    // on a multi-threaded runtime they run on different cores; under turmoil
    // a host has one thread and the interleaving is deterministic.
    let net = Arc::new(net);
    let events = SharedSink(Arc::new(std::sync::Mutex::new(setup.events)));
    let mut loops = Loops {
        iax: cores.iax.map(|slot| {
            let chore = persister.map(|p| Box::new(p) as Box<dyn Chore<Endpoint>>);
            CoreLoop::spawn(slot, net.clone(), events.clone(), chore)
        }),
        sip: cores.sip.map(|slot| CoreLoop::spawn(slot, net.clone(), events.clone(), None)),
    };
    let mut events = events;
    while let Some(command) = setup.commands.recv().await {
        match command {
            Command::Shutdown => break,
            Command::Reload => match config::load(&setup.loader) {
                Ok(loaded) => {
                    if loaded.switch.state_dir != state_dir {
                        tracing::warn!("[state] dir changed in switch.toml: restart the switch to use it");
                    }
                    let resolved = Arc::new(resolve_hosts(&*net, &loaded).await);
                    // As at start: what is not honoured (extensions.conf's notes among them) is logged.
                    for note in &loaded.notes {
                        tracing::warn!("{note}");
                    }
                    // Reported before the cores act on it (a registration sent at once follows).
                    events.emit(&config_loaded(&loaded));
                    let loaded = Arc::new(loaded);
                    if loops.iax.is_some() != loaded.switch.iax2 {
                        tracing::warn!("[iax2] enabled changed in switch.toml: restart the switch to apply it");
                    }
                    if let Some(iax) = &loops.iax {
                        let (l, r) = (loaded.clone(), resolved.clone());
                        iax.ask(move |core, now| ProtocolCore::reconfigure(core, now, &l, &r)).await;
                    }
                    match &loops.sip {
                        Some(sip) => {
                            let (l, r) = (loaded.clone(), resolved.clone());
                            sip.ask(move |core, now| ProtocolCore::reconfigure(core, now, &l, &r)).await;
                        }
                        None if loaded.switch.sip.is_some() => {
                            tracing::warn!("[sip] was added to switch.toml: restart the switch to start SIP")
                        }
                        None => {}
                    }
                }
                Err(diags) => events.emit(&Event::ConfigRejected { error: render(&diags) }),
            },
            command => loops.command(command).await,
        }
    }
    loops.stop().await;
    Ok(())
}

/// The protocol cores of this run, each with the sockets the runtime holds
/// for it, before their loops start (IAX2 first, then SIP).
struct Cores<S> {
    iax: Option<Slot<Endpoint, S>>,
    sip: Option<Slot<SipEndpoint, S>>,
}

struct Slot<C, S> {
    core: C,
    sockets: Sockets<S>,
}

impl<S> Cores<S> {
    fn each(&self) -> impl Iterator<Item = &Sockets<S>> {
        self.iax.iter().map(|s| &s.sockets).chain(self.sip.iter().map(|s| &s.sockets))
    }
}

/// Where every loop's events go, one at a time.
struct SharedSink<S>(Arc<std::sync::Mutex<S>>);

impl<S> Clone for SharedSink<S> {
    fn clone(&self) -> Self {
        SharedSink(self.0.clone())
    }
}

impl<S: EventSink> EventSink for SharedSink<S> {
    fn emit(&mut self, event: &Event) {
        // A sink that panicked holds nothing a later event could corrupt.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).emit(event);
    }
}

/// An operator's request run inside a core's loop, on the core itself.
type Job<C> = Box<dyn FnOnce(&mut C, std::time::Instant) + Send>;

/// Work a loop does beside its core: IAX2's registrations persister.
trait Chore<C>: Send {
    fn poll(&mut self, core: &mut C, now: std::time::Instant, last: bool);
    fn deadline(&self) -> Option<std::time::Instant>;
}

impl Chore<Endpoint> for Persister {
    fn poll(&mut self, core: &mut Endpoint, now: std::time::Instant, last: bool) {
        Persister::poll(self, core, now, last);
    }

    fn deadline(&self) -> Option<std::time::Instant> {
        Persister::deadline(self)
    }
}

/// A running core's loop, as the command dispatcher holds it.
struct CoreLoop<C> {
    jobs: mpsc::Sender<Job<C>>,
    task: tokio::task::JoinHandle<()>,
}

impl<C: ProtocolCore + Send + 'static> CoreLoop<C> {
    fn spawn<N: Net, S: EventSink>(
        slot: Slot<C, N::Socket>,
        net: Arc<N>,
        events: SharedSink<S>,
        chore: Option<Box<dyn Chore<C>>>,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(16);
        let task = tokio::spawn(drive(slot, net, rx, events, chore));
        CoreLoop { jobs, task }
    }

    /// Runs `job` on the core inside its loop; `None` if the loop is gone.
    async fn ask<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut C, std::time::Instant) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job<C> = Box::new(move |core, now| {
            let _ = tx.send(job(core, now));
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }
}

/// One core's event loop: datagrams on its listener and media sockets, its
/// timers and the operator's jobs, until the dispatcher drops its sender.
async fn drive<C: ProtocolCore + Send, N: Net, S: EventSink>(
    slot: Slot<C, N::Socket>,
    net: Arc<N>,
    mut jobs: mpsc::Receiver<Job<C>>,
    mut events: SharedSink<S>,
    mut chore: Option<Box<dyn Chore<C>>>,
) {
    let Slot { mut core, mut sockets } = slot;
    let (media_tx, mut media_rx) = mpsc::channel(MEDIA_QUEUE);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if let Some(chore) = &mut chore {
            chore.poll(&mut core, Instant::now().into_std(), false);
        }
        sockets.flush(&mut core, &*net, &media_tx, &mut events).await;
        let deadline = [core.poll_timeout(), chore.as_ref().and_then(|c| c.deadline())]
            .into_iter()
            .flatten()
            .min()
            .map(Instant::from_std);
        tokio::select! {
            biased;
            job = jobs.recv() => match job {
                Some(job) => job(&mut core, Instant::now().into_std()),
                None => {
                    if let Some(chore) = &mut chore {
                        chore.poll(&mut core, Instant::now().into_std(), true);
                    }
                    return;
                }
            },
            received = sockets.listener.recv_from(&mut buf) => match received {
                Ok((len, from)) => {
                    core.handle_input(Instant::now().into_std(), SocketId::Listener, from, &buf[..len]);
                    for _ in 1..RECV_BURST {
                        sockets.flush(&mut core, &*net, &media_tx, &mut events).await;
                        let Ok((len, from)) = sockets.listener.try_recv_from(&mut buf) else { break };
                        core.handle_input(Instant::now().into_std(), SocketId::Listener, from, &buf[..len]);
                    }
                }
                // ICMP errors surface here on some platforms; they say nothing the
                // protocol's own timers will not find out.
                Err(e) => tracing::debug!("{} recv_from: {e}", core.name()),
            },
            received = media_rx.recv() => if let Some(m) = received {
                core.handle_input(Instant::now().into_std(), SocketId::Media(m.port), m.from, &m.payload);
            },
            _ = sleep_until(deadline) => core.handle_timeout(Instant::now().into_std()),
        }
    }
}

/// The loops of this run, by protocol; the commands of one protocol (its
/// `show` views) reach its core by name.
struct Loops {
    iax: Option<CoreLoop<Endpoint>>,
    sip: Option<CoreLoop<SipEndpoint>>,
}

impl Loops {
    /// Answers an operator's command (all but `Reload` and `Shutdown`, which are the dispatcher's).
    async fn command(&mut self, command: Command) {
        match command {
            Command::Reload | Command::Shutdown => {}
            Command::ShowPeers(tx) => {
                let _ = tx.send(answer_or(&self.iax, IAX_OFF, |c, _| text::iax_peers(&c.peers())).await);
            }
            Command::ShowRegistry(tx) => {
                let _ = tx.send(answer_or(&self.iax, IAX_OFF, |c, now| text::iax_registry(&c.registry(now))).await);
            }
            Command::ShowStats(tx) => {
                let mut answer = match &self.iax {
                    Some(iax) => iax.ask(|c, _| text::iax_stats(&c.stats_view())).await.unwrap_or_default(),
                    None => String::new(),
                };
                if let Some(sip) = &self.sip {
                    answer.push_str(&sip.ask(|c, _| text::sip_stats(&c.stats_view())).await.unwrap_or_default());
                }
                let _ = tx.send(answer);
            }
            Command::ShowChannels(tx) => {
                let _ = tx.send(answer_or(&self.iax, IAX_OFF, |c, _| text::iax_channels(&c.channels())).await);
            }
            Command::ShowSipRegistrations(tx) => {
                let _ = tx
                    .send(answer_or(&self.sip, SIP_OFF, |c, now| text::sip_registrations(&c.registrations(now))).await);
            }
            Command::ShowSipGateways(tx) => {
                let _ = tx.send(answer_or(&self.sip, SIP_OFF, |c, now| text::sip_gateways(&c.gateways(now))).await);
            }
            Command::ShowSipBans(tx) => {
                let _ = tx.send(answer_or(&self.sip, SIP_OFF, |c, now| text::bans(&c.bans(now))).await);
            }
            Command::ShowSipChannels(tx) => {
                let _ = tx.send(answer_or(&self.sip, SIP_OFF, |c, now| text::sip_channels(&c.channels(now))).await);
            }
            Command::SipUnban { source, reply } => {
                let _ = reply.send(answer_or(&self.sip, SIP_OFF, move |c, _| unbanned(source, c.unban(source))).await);
            }
            Command::ShowIaxBans(tx) => {
                let _ = tx.send(answer_or(&self.iax, IAX_OFF, |c, now| text::bans(&c.bans(now))).await);
            }
            Command::IaxUnban { source, reply } => {
                let _ = reply.send(answer_or(&self.iax, IAX_OFF, move |c, _| unbanned(source, c.unban(source))).await);
            }
            Command::HangupAll(tx) => {
                let mut n = 0;
                if let Some(iax) = &self.iax {
                    n += iax.ask(|c, now| c.hangup_all(now)).await.unwrap_or(0);
                }
                if let Some(sip) = &self.sip {
                    n += sip.ask(|c, now| c.hangup_all(now)).await.unwrap_or(0);
                }
                let _ = tx.send(format!("{n} call(s) hung up"));
            }
            Command::Originate { request, count, reply } => {
                let answer = if self.iax.is_some() && dial_has_tech(&request.dial, "IAX2") {
                    answer_or(&self.iax, IAX_OFF, move |c, now| originate(c, now, &request, count)).await
                } else if self.sip.is_some() && dial_has_tech(&request.dial, "SIP") {
                    answer_or(&self.sip, SIP_OFF, move |c, now| originate(c, now, &request, count)).await
                } else {
                    format!("0 of {count} call(s) placed to {}; refused: {}", request.dial, no_core_for(&request.dial))
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Closes every loop's jobs and waits for it to end (IAX2 saves its registrations last).
    async fn stop(self) {
        for task in [self.iax.map(CoreLoop::close), self.sip.map(CoreLoop::close)].into_iter().flatten() {
            let _ = task.await;
        }
    }
}

impl<C> CoreLoop<C> {
    fn close(self) -> tokio::task::JoinHandle<()> {
        drop(self.jobs);
        self.task
    }
}

/// The core's answer to `job`, or what a protocol that is off says.
async fn answer_or<C: ProtocolCore + Send + 'static>(
    core: &Option<CoreLoop<C>>,
    off: &str,
    job: impl FnOnce(&mut C, std::time::Instant) -> String + Send + 'static,
) -> String {
    match core {
        Some(core) => core.ask(job).await.unwrap_or_default(),
        None => off.to_string(),
    }
}

/// Places `count` calls through `core`; the operator's one-line answer.
fn originate(core: &mut dyn ProtocolCore, now: std::time::Instant, request: &Originate, count: u32) -> String {
    let (mut placed, mut queued) = (0, 0);
    let mut first_error = None;
    for _ in 0..count {
        match core.originate(now, request) {
            Ok(placement) => {
                placed += 1;
                queued += usize::from(placement == Placement::Queued);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let paced = if queued > 0 {
        format!(" ({queued} queued: the peer's maxauthreq caps the calls awaiting authentication)")
    } else {
        String::new()
    };
    match first_error {
        None => format!("{placed} call(s) placed to {}{paced}", request.dial),
        Some(e) => format!("{placed} of {count} call(s) placed to {}{paced}; refused: {e}", request.dial),
    }
}

/// Why no running core takes `dial`: its protocol is off, or it names none.
fn no_core_for(dial: &str) -> OriginateError {
    if dial_has_tech(dial, "SIP") {
        OriginateError::ProtocolOff { protocol: "SIP", hint: "add a [sip] table to switch.toml" }
    } else if dial_has_tech(dial, "IAX2") {
        OriginateError::ProtocolOff { protocol: "IAX2", hint: "[iax2] enabled = false in switch.toml" }
    } else {
        OriginateError::InvalidDial(DialError::UnknownTech(dial.to_string()))
    }
}

fn unbanned(source: IpAddr, lifted: bool) -> String {
    match lifted {
        true => format!("{source} unbanned\n"),
        false => format!("{source} was not banned\n"),
    }
}

const SIP_OFF: &str = "SIP is off: add a [sip] table to switch.toml\n";
const IAX_OFF: &str = "IAX2 is off: [iax2] enabled = false in switch.toml\n";

/// Datagrams read by the media sockets' tasks and not yet handled. Bounded:
/// when the loop falls behind, the readers wait and the kernel drops.
const MEDIA_QUEUE: usize = 4096;

/// Datagrams the event loop takes off the listener in one wake-up once the
/// first has come: a trunk tick of 800 calls is 115.
const RECV_BURST: usize = 128;

/// The largest media datagram read whole: audio RTP is a few hundred bytes,
/// and anything longer than a path MTU is no call's audio.
const MAX_MEDIA_DATAGRAM: usize = 2048;

/// The sockets of one core: its listener and the media sockets it asked for.
struct Sockets<S> {
    listener: S,
    /// The listener's address as bound.
    bound: SocketAddr,
    /// RTP port -> its pair of sockets.
    media: BTreeMap<u16, MediaPair<S>>,
    /// Where media sockets are bound.
    media_ip: IpAddr,
}

struct MediaDatagram {
    port: u16,
    from: SocketAddr,
    payload: Vec<u8>,
}

/// A call's RTP and RTCP sockets. Each is read by its own task that forwards
/// into the loop's one channel: the loop waits on one receiver however many
/// calls there are, and a channel receive is cancel-safe. Under turmoil a
/// host runs on one thread, so the interleaving stays deterministic.
struct MediaPair<S> {
    rtp: Arc<S>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl<S> Drop for MediaPair<S> {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

fn read_media<S: DatagramSocket>(
    socket: Arc<S>,
    port: u16,
    tx: mpsc::Sender<MediaDatagram>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MEDIA_DATAGRAM];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((len, from)) => {
                    let payload = buf[..len.min(buf.len())].to_vec();
                    if tx.send(MediaDatagram { port, from, payload }).await.is_err() {
                        return;
                    }
                }
                // ICMP errors surface here on some platforms; the RTP timeout
                // finds a dead peer. The pause keeps a socket that errs at
                // once from spinning (and a simulated host from never idling).
                Err(e) => {
                    tracing::debug!("RTP recv_from on port {port}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    })
}

impl<S: DatagramSocket> Sockets<S> {
    fn new(listener: S, bound: SocketAddr, media_ip: IpAddr) -> Self {
        Sockets { listener, bound, media: BTreeMap::new(), media_ip }
    }

    /// Reports what the core has to report, opens and closes media sockets
    /// as it asks (each before the datagrams that need them), sends what it
    /// has to send, and reports what that produced. The same for every core.
    async fn flush<N: Net<Socket = S>, C: ProtocolCore + Send>(
        &mut self,
        core: &mut C,
        net: &N,
        media_tx: &mpsc::Sender<MediaDatagram>,
        events: &mut impl EventSink,
    ) {
        while let Some(event) = core.poll_event() {
            events.emit(&event);
        }
        loop {
            while let Some(request) = core.poll_socket_request() {
                match request {
                    SocketRequest::Open(port) => match self.open_media(net, port, media_tx).await {
                        Ok(()) => core.socket_opened(Instant::now().into_std(), port),
                        Err(e) => {
                            tracing::warn!(
                                "cannot bind media ports {port}/{} on {}: {e}",
                                port.wrapping_add(1),
                                self.media_ip
                            );
                            core.socket_failed(Instant::now().into_std(), port, &e.to_string());
                        }
                    },
                    SocketRequest::Close(port) => {
                        self.media.remove(&port);
                    }
                }
            }
            let Some(t) = core.poll_transmit() else { break };
            let result = match t.socket {
                SocketId::Listener => self.listener.send_to(&t.payload, t.destination).await,
                SocketId::Media(port) => match self.media.get(&port) {
                    Some(pair) => pair.rtp.send_to(&t.payload, t.destination).await,
                    None => continue,
                },
            };
            if let Err(e) = result {
                tracing::debug!("{} send_to {}: {e}", core.name(), t.destination);
            }
        }
        while let Some(event) = core.poll_event() {
            events.emit(&event);
        }
    }

    async fn open_media<N: Net<Socket = S>>(
        &mut self,
        net: &N,
        port: u16,
        media_tx: &mpsc::Sender<MediaDatagram>,
    ) -> std::io::Result<()> {
        let rtcp_port = port.checked_add(1).ok_or_else(|| std::io::Error::other("no RTCP port above 65535"))?;
        let rtp = Arc::new(net.bind_media(SocketAddr::new(self.media_ip, port)).await?);
        let rtcp = Arc::new(net.bind_media(SocketAddr::new(self.media_ip, rtcp_port)).await?);
        let readers =
            vec![read_media(rtp.clone(), port, media_tx.clone()), read_media(rtcp, rtcp_port, media_tx.clone())];
        self.media.insert(port, MediaPair { rtp, readers });
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The registrations' persister when `[state] dir` is set and this run has a store.
fn persister(loaded: &LoadedConfig, store: Option<Arc<dyn StateStore>>) -> Option<Persister> {
    let dir = loaded.switch.state_dir.clone()?;
    match store {
        Some(store) => Some(Persister::new(store, dir)),
        None => {
            tracing::warn!("[state] dir is set but this run has no state store: nothing is kept");
            None
        }
    }
}

fn config_loaded(loaded: &LoadedConfig) -> Event {
    Event::ConfigLoaded {
        peers: loaded.iax.peers.len(),
        registrations: loaded.iax.registrations.len(),
        problems: loaded.notes.len(),
    }
}

/// Resolves every host name the configuration mentions, once per load.
/// Names that do not resolve are left out; the endpoint reports them when used.
async fn resolve_hosts<N: Net>(net: &N, loaded: &LoadedConfig) -> ResolvedHosts {
    let mut names: Vec<&str> = loaded.iax.registrations.iter().map(|r| r.host.as_str()).collect();
    names.extend(loaded.iax.peers.iter().filter_map(|p| match &p.host {
        Host::Static(h) => Some(h.as_str()),
        Host::Dynamic { .. } => None,
    }));
    names.extend(loaded.switch.sip.iter().flat_map(|s| s.gateways.iter().map(|g| g.host.as_str())));
    let mut map: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for name in names {
        if map.contains_key(name) {
            continue;
        }
        match net.resolve(name).await {
            Ok(ips) if !ips.is_empty() => {
                map.insert(name.to_string(), ips);
            }
            Ok(_) | Err(_) => tracing::warn!("cannot resolve host {name:?}"),
        }
    }
    ResolvedHosts(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Mutex;

    /// A host without IPv6 (`ipv6` false) or with the port taken (`busy`):
    /// records every bind attempted.
    struct FakeNet {
        ipv6: bool,
        busy: bool,
        tried: Mutex<Vec<SocketAddr>>,
    }

    struct Idle;

    impl DatagramSocket for Idle {
        async fn send_to(&self, buf: &[u8], _: SocketAddr) -> io::Result<usize> {
            Ok(buf.len())
        }
        async fn recv_from(&self, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            std::future::pending().await
        }
        fn try_recv_from(&self, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl Net for FakeNet {
        type Socket = Idle;
        async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Idle> {
            self.tried.lock().unwrap().push(addr);
            if self.busy {
                return Err(io::Error::from(io::ErrorKind::AddrInUse));
            }
            if addr.is_ipv6() && !self.ipv6 {
                return Err(io::Error::from_raw_os_error(97)); // EAFNOSUPPORT
            }
            Ok(Idle)
        }
        async fn resolve(&self, _: &str) -> io::Result<Vec<IpAddr>> {
            Ok(Vec::new())
        }
        fn unix_time(&self) -> u64 {
            0
        }
    }

    fn bind(net: &FakeNet, addr: &str) -> (io::Result<SocketAddr>, Vec<Event>) {
        let events = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let mut sink = move |e: &Event| seen.lock().unwrap().push(e.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let result = runtime.block_on(bind_listener(net, "[sip] listen", addr.parse().unwrap(), &mut sink));
        let events = events.lock().unwrap().clone();
        (result.map(|(_, bound)| bound), events)
    }

    #[test]
    fn the_v6_wildcard_falls_back_to_v4_where_there_is_no_v6_and_says_so() {
        let net = FakeNet { ipv6: false, busy: false, tried: Mutex::default() };
        let (bound, events) = bind(&net, "[::]:5060");
        assert_eq!(bound.unwrap(), "0.0.0.0:5060".parse::<SocketAddr>().unwrap());
        let [Event::ListenerFallback { listener, requested, bound, error }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(
            (listener.as_str(), requested.to_string(), bound.to_string()),
            ("[sip] listen", "[::]:5060".into(), "0.0.0.0:5060".into())
        );
        assert!(error.contains("os error 97"), "{error}");
    }

    #[test]
    fn iax2_switched_off_binds_nothing_and_refuses_its_commands() {
        let net = FakeNet { ipv6: true, busy: true, tried: Mutex::default() };
        let loader = crate::config::MapLoader::from_files([("switch.toml", "[iax2]\nenabled = false\n")]);
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let sink = move |e: &Event| seen.lock().unwrap().push(e.clone());
        let (tx, commands) = mpsc::channel(4);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (peers, originated) = runtime.block_on(async {
            let (reply, peers) = oneshot::channel();
            tx.send(Command::ShowPeers(reply)).await.unwrap();
            let request = Originate {
                dial: "IAX2/b/100".into(),
                app: crate::dialplan::App::Pattern,
                hold: None,
                calling: (None, None),
            };
            let (reply, originated) = oneshot::channel();
            tx.send(Command::Originate { request, count: 1, reply }).await.unwrap();
            tx.send(Command::Shutdown).await.unwrap();
            // Every bind fails on this host: the run only gets through without binding.
            run(net, SwitchSetup { loader, seed: 1, events: sink, commands, state: None }).await.unwrap();
            (peers.await.unwrap(), originated.await.unwrap())
        });
        assert_eq!(peers, IAX_OFF);
        assert_eq!(
            originated,
            "0 of 1 call(s) placed to IAX2/b/100; refused: IAX2 is off: [iax2] enabled = false in switch.toml"
        );
        let events = events.lock().unwrap();
        assert!(!events.iter().any(|e| matches!(e, Event::Started { .. })), "{events:?}");
    }

    #[test]
    fn anything_else_fails_loudly_without_fallback() {
        // A specific IPv6 address is not the wildcard: no guess at what else to bind.
        let net = FakeNet { ipv6: false, busy: false, tried: Mutex::default() };
        let (bound, events) = bind(&net, "[2001:db8::1]:5060");
        assert!(bound.is_err() && events.is_empty());
        // The port taken is not an address-family problem.
        let net = FakeNet { ipv6: true, busy: true, tried: Mutex::default() };
        let (bound, events) = bind(&net, "[::]:5060");
        assert_eq!(bound.unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert!(events.is_empty());
        assert_eq!(net.tried.lock().unwrap().len(), 1);
        // With IPv6, `[::]` is bound as asked.
        let net = FakeNet { ipv6: true, busy: false, tried: Mutex::default() };
        assert_eq!(bind(&net, "[::]:5060").0.unwrap(), "[::]:5060".parse::<SocketAddr>().unwrap());
        let message = RunError::BindSip {
            addr: "[2001:db8::1]:5060".parse().unwrap(),
            what: "listen",
            source: io::Error::from_raw_os_error(97),
        }
        .to_string();
        assert!(
            message.contains("[2001:db8::1]:5060") && message.contains("listen") && message.contains("os error 97"),
            "{message}"
        );
    }
}
