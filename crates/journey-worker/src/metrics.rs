//! Prometheus metrics of the worker and the HTTP endpoints that expose them.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Metrics of the processing loop, registered into an injected registry.
#[derive(Clone)]
pub struct Metrics {
    pub consumed: IntCounter,
    pub applied: IntCounter,
    pub duplicates: IntCounter,
    pub late: IntCounter,
    pub dead_letters: IntCounterVec,
    pub transitions: IntCounterVec,
    pub merges: IntCounter,
    pub expired: IntCounter,
    pub links: IntCounterVec,
    pub commits: IntCounter,
    pub aborts: IntCounter,
    pub batch_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub transition_latency: HistogramVec,
    pub watermark: prometheus::Gauge,
    pub pending_events: IntGauge,
    pub timers_pending: IntGauge,
    pub customers: IntGauge,
    pub identifiers: IntGauge,
    pub event_time_lag: prometheus::Gauge,
    pub rebalances: IntGauge,
    pub ready: IntGauge,
    pub consumer_lag: prometheus::IntGaugeVec,
    pub state_sst_bytes: IntGauge,
    pub state_memtable_bytes: IntGauge,
    pub state_block_cache_bytes: IntGauge,
    pub cached_journeys: IntGauge,
    pub cached_journey_bytes: IntGauge,
    pub journey_loads: IntCounter,
    pub journey_evictions: IntCounter,
    pub identity_bytes: IntGauge,
    pub customer_loads: IntCounter,
    pub customer_evictions: IntCounter,
    pub restore_records: IntGauge,
    pub restore_seconds: prometheus::Gauge,
    /// Health flags read by `/health/*`.
    pub health: Arc<Health>,
}

/// Liveness and readiness, set by the processing loop.
#[derive(Default)]
pub struct Health {
    /// Group joined, partitions assigned and ready to process.
    pub ready: AtomicBool,
    /// Wall-clock millis of the last iteration of each running loop
    /// (liveness): a share's processing loop by share number, the share
    /// manager under [`Health::MANAGER`].
    beats: std::sync::Mutex<std::collections::BTreeMap<u32, i64>>,
    /// State restores in progress (shares being started).
    restoring: AtomicI64,
}

impl Health {
    /// The loop id of the share manager (several instances).
    pub const MANAGER: u32 = u32::MAX;

    /// Records an iteration of loop `id`.
    pub fn beat(&self, id: u32) {
        let mut beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.insert(id, now_ms());
    }

    /// Loop `id` has ended: it no longer counts for liveness.
    pub fn ended(&self, id: u32) {
        let mut beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.remove(&id);
    }

    /// Ends loop `id` (see [`Health::ended`]) when the guard is dropped.
    pub fn beating(self: &Arc<Self>, id: u32) -> Beating {
        Beating(self.clone(), id)
    }

    /// The running loop silent the longest, if silent for at least `limit_ms`:
    /// its id and how long.
    pub fn silent(&self, limit_ms: i64) -> Option<(u32, i64)> {
        let now = now_ms();
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats
            .iter()
            .map(|(&id, &at)| (id, now - at))
            .max_by_key(|&(_, age)| age)
            .filter(|&(_, age)| age >= limit_ms)
    }

    /// Ready, and no state being restored.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.restoring.load(Ordering::Relaxed) == 0
    }

    /// Marks a restore in progress until the guard is dropped.
    pub fn restoring(self: &Arc<Self>) -> Restoring {
        self.restoring.fetch_add(1, Ordering::Relaxed);
        Restoring(self.clone())
    }
}

/// A running loop (see [`Health::beating`]).
pub struct Beating(Arc<Health>, u32);

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.ended(self.1);
    }
}

/// A restore in progress (see [`Health::restoring`]).
pub struct Restoring(Arc<Health>);

impl Drop for Restoring {
    fn drop(&mut self) {
        self.0.restoring.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gauges a share adds to the process's totals (see [`Contribution`]).
#[derive(Debug, Clone, Copy)]
pub enum Held {
    PendingEvents,
    TimersPending,
    Customers,
    Identifiers,
    SstBytes,
    MemtableBytes,
    BlockCacheBytes,
    CachedJourneys,
    CachedJourneyBytes,
    IdentityBytes,
}

const HELD: usize = 10;

/// Counters a share advances to its totals (see [`Contribution`]).
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    Applied,
    Duplicates,
    Late,
    JourneyLoads,
    JourneyEvictions,
    CustomerLoads,
    CustomerEvictions,
}

const COUNTED: usize = 7;

/// One share's part of the process-wide metrics: counters advance by the
/// change of the share's engine totals and gauges by the change of its
/// values, so that several shares in one process add up; dropping it takes
/// the share's gauges back out (a revoked share holds nothing here).
pub struct Contribution {
    metrics: Metrics,
    counted: [Cell<u64>; COUNTED],
    held: [Cell<i64>; HELD],
}

impl Contribution {
    /// A share that has counted and holds nothing yet.
    pub fn new(metrics: &Metrics) -> Self {
        Contribution {
            metrics: metrics.clone(),
            counted: Default::default(),
            held: Default::default(),
        }
    }

    fn gauge(&self, g: Held) -> &IntGauge {
        let m = &self.metrics;
        match g {
            Held::PendingEvents => &m.pending_events,
            Held::TimersPending => &m.timers_pending,
            Held::Customers => &m.customers,
            Held::Identifiers => &m.identifiers,
            Held::SstBytes => &m.state_sst_bytes,
            Held::MemtableBytes => &m.state_memtable_bytes,
            Held::BlockCacheBytes => &m.state_block_cache_bytes,
            Held::CachedJourneys => &m.cached_journeys,
            Held::CachedJourneyBytes => &m.cached_journey_bytes,
            Held::IdentityBytes => &m.identity_bytes,
        }
    }

    /// Sets this share's value of a gauge.
    pub fn hold(&self, g: Held, value: i64) {
        let was = self.held[g as usize].replace(value);
        self.gauge(g).add(value - was);
    }

    /// Advances a counter by the growth of this share's total.
    pub fn count(&self, c: Counted, total: u64) {
        let m = &self.metrics;
        let counter = match c {
            Counted::Applied => &m.applied,
            Counted::Duplicates => &m.duplicates,
            Counted::Late => &m.late,
            Counted::JourneyLoads => &m.journey_loads,
            Counted::JourneyEvictions => &m.journey_evictions,
            Counted::CustomerLoads => &m.customer_loads,
            Counted::CustomerEvictions => &m.customer_evictions,
        };
        let counted = &self.counted[c as usize];
        counter.inc_by(total.saturating_sub(counted.get()));
        counted.set(counted.get().max(total));
    }
}

impl Drop for Contribution {
    fn drop(&mut self) {
        for g in [
            Held::PendingEvents,
            Held::TimersPending,
            Held::Customers,
            Held::Identifiers,
            Held::SstBytes,
            Held::MemtableBytes,
            Held::BlockCacheBytes,
            Held::CachedJourneys,
            Held::CachedJourneyBytes,
            Held::IdentityBytes,
        ] {
            self.hold(g, 0);
        }
    }
}

/// Registers a collector and hands it back.
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn float_gauge(r: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    register(r, prometheus::Gauge::new(name, help).expect("valid metric"))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(r, Histogram::with_opts(opts).expect("valid metric"))
}

impl Metrics {
    /// Registers every metric into `r`.
    pub fn new(r: &Registry) -> Self {
        let fast = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "journey_transition_latency_seconds",
                "Wall-clock time from an event's Kafka timestamp to the commit of the transition it caused.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["model"],
        )
        .expect("valid metric");
        let latency = register(r, latency);
        let lag = float_gauge(
            r,
            "journey_event_time_lag_seconds",
            "Wall clock minus the event time of the last applied event.",
        );
        let info = register(
            r,
            prometheus::IntGaugeVec::new(
                Opts::new("journey_build_info", "Build information (always 1)."),
                &["version"],
            )
            .expect("valid metric"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
        Metrics {
            consumed: counter(r, "journey_records_consumed_total", "Input records read."),
            applied: counter(
                r,
                "journey_events_applied_total",
                "Events applied to a journey.",
            ),
            duplicates: counter(
                r,
                "journey_events_duplicate_total",
                "Events recognised as duplicates (changed nothing).",
            ),
            late: counter(
                r,
                "journey_events_late_total",
                "Events that arrived behind the watermark.",
            ),
            dead_letters: counter_vec(
                r,
                "journey_dead_letters_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            transitions: counter_vec(
                r,
                "journey_transitions_total",
                "Stage transitions emitted.",
                &["model", "from", "to", "cause"],
            ),
            merges: counter(
                r,
                "journey_profile_merges_total",
                "Journeys merged into another.",
            ),
            expired: counter(
                r,
                "journey_customers_expired_total",
                "Customers forgotten after engine.customer-ttl-ms without a touchpoint.",
            ),
            links: counter_vec(
                r,
                "journey_identity_links_total",
                "Identity links, by result (accepted or the refusing guard).",
                &["result"],
            ),
            commits: counter(
                r,
                "journey_commits_total",
                "Transactions (or offset commits) completed.",
            ),
            aborts: counter(
                r,
                "journey_transaction_aborts_total",
                "Transactions aborted.",
            ),
            batch_seconds: histogram(
                r,
                "journey_batch_processing_seconds",
                "Time to process one polled batch.",
                fast.clone(),
            ),
            commit_seconds: histogram(
                r,
                "journey_commit_seconds",
                "Time to commit a transaction.",
                fast,
            ),
            transition_latency: latency,
            watermark: float_gauge(
                r,
                "journey_watermark_seconds",
                "Event-time watermark (Unix seconds).",
            ),
            pending_events: gauge(
                r,
                "journey_pending_events",
                "Events held until the watermark passes them.",
            ),
            timers_pending: gauge(r, "journey_timers_pending", "Inactivity timers held in memory (with one instance, the others wait in the state store's timer index)."),
            customers: gauge(r, "journey_customers", "Customers (identity sets) held."),
            identifiers: gauge(r, "journey_identifiers", "Identifiers held."),
            event_time_lag: lag,
            rebalances: gauge(
                r,
                "journey_rebalances",
                "Consumer group rebalances seen by this worker.",
            ),
            consumer_lag: register(
                r,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "journey_consumer_lag_records",
                        "Records behind the end of each assigned input partition (librdkafka statistics).",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric"),
            ),
            state_sst_bytes: gauge(
                r,
                "journey_state_sst_bytes",
                "Live RocksDB SST bytes of the state store.",
            ),
            state_memtable_bytes: gauge(
                r,
                "journey_state_memtable_bytes",
                "RocksDB memtable bytes of the state store.",
            ),
            state_block_cache_bytes: gauge(
                r,
                "journey_state_block_cache_bytes",
                "RocksDB block cache bytes in use.",
            ),
            cached_journeys: gauge(
                r,
                "journey_cached_journeys",
                "Journeys held in memory (the others are in RocksDB).",
            ),
            cached_journey_bytes: gauge(
                r,
                "journey_cached_journey_bytes",
                "Estimated bytes of the journeys held in memory (bounded by state.journey-cache-bytes).",
            ),
            journey_loads: counter(
                r,
                "journey_journey_loads_total",
                "Journeys read from RocksDB because they were not in memory.",
            ),
            journey_evictions: counter(
                r,
                "journey_journey_evictions_total",
                "Journeys dropped from memory to stay within state.journey-cache-bytes.",
            ),
            identity_bytes: gauge(
                r,
                "journey_identity_graph_bytes",
                "Estimated bytes of the identity graph held in memory (bounded by state.identity-cache-bytes when it pages).",
            ),
            customer_loads: counter(
                r,
                "journey_customer_loads_total",
                "Customers (identifier sets) read from RocksDB because they were not in memory.",
            ),
            customer_evictions: counter(
                r,
                "journey_customer_evictions_total",
                "Customers dropped from memory to stay within state.identity-cache-bytes.",
            ),
            restore_records: gauge(
                r,
                "journey_restore_records",
                "Changelog records read by the last restore (0: the local state was current).",
            ),
            restore_seconds: float_gauge(
                r,
                "journey_restore_duration_seconds",
                "Duration of the last state restore or load at start-up.",
            ),
            ready: gauge(
                r,
                "journey_ready",
                "1 when partitions are assigned and state is restored, else 0.",
            ),
            health: Arc::new(Health::default()),
        }
    }
}

/// Serves `/metrics`, `/health/live` and `/health/ready` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Registry, health: Arc<Health>) {
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "http endpoints listening");
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match sock.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => {
                    let mut out = Vec::new();
                    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
                        warn!(error = %e, "cannot encode metrics");
                    }
                    ("200 OK", "text/plain; version=0.0.4", out)
                }
                "/health/live" => match health.silent(60_000) {
                    None => ("200 OK", "text/plain", b"live\n".to_vec()),
                    Some((id, age)) => {
                        let which = if id == Health::MANAGER {
                            "share manager".to_string()
                        } else {
                            format!("processing loop {id}")
                        };
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            format!("{which} silent for {age} ms\n").into_bytes(),
                        )
                    }
                },
                "/health/ready" => {
                    if health.is_ready() {
                        ("200 OK", "text/plain", b"ready\n".to_vec())
                    } else {
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            b"not ready\n".to_vec(),
                        )
                    }
                }
                _ => (
                    "404 Not Found",
                    "text/plain",
                    b"try /metrics, /health/live or /health/ready\n".to_vec(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body).await;
        });
    }
}

/// Wall clock, Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_a_dropped_share_takes_its_gauges_back() {
        let m = Metrics::new(&Registry::new());
        let a = Contribution::new(&m);
        let b = Contribution::new(&m);
        a.hold(Held::Customers, 10);
        b.hold(Held::Customers, 5);
        a.hold(Held::Customers, 12);
        assert_eq!(m.customers.get(), 17);
        for (share, totals) in [(&a, [100, 2, 1]), (&b, [40, 0, 0]), (&a, [150, 2, 3])] {
            for (c, total) in [Counted::Applied, Counted::Duplicates, Counted::Late]
                .into_iter()
                .zip(totals)
            {
                share.count(c, total);
            }
        }
        assert_eq!(
            (m.applied.get(), m.duplicates.get(), m.late.get()),
            (190, 2, 3)
        );
        drop(a);
        assert_eq!(m.customers.get(), 5);
        assert_eq!(m.applied.get(), 190, "counters never go back");
    }

    #[test]
    fn a_silent_loop_fails_liveness_until_it_ends() {
        let h = Health::default();
        assert_eq!(h.silent(60_000), None, "no loop yet: live");
        h.beat(0);
        h.beat(1);
        assert_eq!(h.silent(60_000), None);
        h.beats.lock().unwrap().insert(1, now_ms() - 61_000);
        assert_eq!(h.silent(60_000).map(|(id, _)| id), Some(1));
        h.ended(1);
        assert_eq!(h.silent(60_000), None);
    }

    #[test]
    fn not_ready_while_a_share_restores() {
        let h = Arc::new(Health::default());
        h.ready.store(true, Ordering::Relaxed);
        let r = h.restoring();
        assert!(!h.is_ready());
        drop(r);
        assert!(h.is_ready());
    }
}
