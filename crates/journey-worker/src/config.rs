//! The worker's configuration: one TOML or YAML file plus `JOURNEY__…` environment overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use journey_core::{EngineConfig, StageModel};
use journey_kafka::{ClientConfig, SchemaIds};
use serde::{Deserialize, Serialize};

/// The whole configuration tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaSection,
    pub topics: Topics,
    pub processing: Processing,
    pub engine: EngineConfig,
    /// Stage models to run: builtin names (`funnel5`, `loyalty5`, `decision4`)
    /// or paths to `.toml`/`.yaml` model files.
    pub models: Models,
    pub schema_ids: SchemaIds,
    pub state: State,
    pub http: Http,
    pub log: Log,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Models(pub Vec<String>);

impl Default for Models {
    fn default() -> Self {
        Models(vec!["funnel5".into()])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Bootstrap servers.
    pub brokers: String,
    /// Application id: the consumer group and the prefix of transactional ids.
    pub application_id: String,
    /// Static group membership (`group.instance.id`): a worker restarted
    /// within the session timeout gets its partitions back without a
    /// rebalance, and a crashed one is replaced at once instead of after the
    /// timeout. Unset: `<application-id>-<JOURNEY_INSTANCE_ID or 0>`; empty:
    /// dynamic membership.
    pub group_instance_id: Option<String>,
    /// librdkafka properties passed through unchanged (TLS, SASL, tuning).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: "127.0.0.1:9092".into(),
            application_id: "journey".into(),
            group_instance_id: None,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Topics {
    /// Input interaction events.
    pub input: String,
    /// Partitions of the input topic when the worker creates it.
    pub input_partitions: i32,
    /// Stage transitions.
    pub transitions: String,
    /// Dead letters.
    pub dead_letters: String,
    /// Profile merges.
    pub merges: String,
    /// Identity links (applied and refused).
    pub identity_links: String,
    /// Compacted changelog of the workers' state: one partition with one
    /// instance, `input-partitions` partitions with several. Empty:
    /// `<application-id>-state-changelog`.
    pub changelog: String,
    /// Internal topic of events re-keyed by customer key (several
    /// instances). Empty: `<application-id>-repartition`.
    pub repartition: String,
    /// Internal single-partition log of identity links, read by every
    /// instance (several instances). Empty: `<application-id>-identity-log`.
    pub identity_log: String,
    /// Coordination topic of several instances: one partition per share, no
    /// records; the share group's assignment of its partitions decides which
    /// process runs which share. Empty: `<application-id>-shares`.
    pub shares: String,
    /// Partitions of the output topics when the worker creates them.
    pub output_partitions: i32,
    /// Replication factor of created topics.
    pub replication: i32,
    /// Create missing topics at start-up.
    pub create: bool,
    /// Besides the transitions topic, also send each transition to
    /// `<transitions>.<model>` ("model") and/or to
    /// `<transitions>.<model>.<from>-to-<to>` ("transition", `none` for a
    /// first stage). The worker creates every such topic its models can reach.
    pub routing: Vec<Routing>,
}

/// Extra transition topics (see `topics.routing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// One topic per stage model.
    Model,
    /// One topic per model and (from, to) pair.
    Transition,
}

impl Topics {
    /// The extra topics a transition goes to.
    pub fn routed(&self, model: &str, from: Option<&str>, to: &str) -> Vec<String> {
        self.routing
            .iter()
            .map(|r| match r {
                Routing::Model => format!("{}.{model}", self.transitions),
                Routing::Transition => format!(
                    "{}.{model}.{}-to-{to}",
                    self.transitions,
                    from.unwrap_or("none")
                ),
            })
            .collect()
    }

    /// Every extra topic the given models can reach.
    pub fn all_routed(&self, models: &[StageModel]) -> Vec<String> {
        let mut out = Vec::new();
        for m in models {
            let stages = m.stages();
            for to in stages {
                let froms = std::iter::once(None).chain(stages.iter().map(|s| Some(s.as_str())));
                for from in froms.filter(|f| *f != Some(to.as_str())) {
                    out.extend(self.routed(m.name(), from, to));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            input: "interactions".into(),
            input_partitions: 3,
            transitions: "journey-transitions".into(),
            dead_letters: "journey-dead-letters".into(),
            merges: "journey-profile-merges".into(),
            identity_links: "journey-identity-links".into(),
            changelog: String::new(),
            repartition: String::new(),
            identity_log: String::new(),
            shares: String::new(),
            output_partitions: 3,
            replication: 1,
            create: true,
            routing: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Kafka transactions: offsets and outputs commit atomically.
    ExactlyOnce,
    /// Outputs acknowledged, then offsets committed (repeats possible after a crash).
    AtLeastOnce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Processing {
    pub mode: Mode,
    /// Shares of the work. With more than one, share `s` owns the partitions
    /// `p % instances == s` of the input and internal topics, events are
    /// stitched across shares through the repartition topic and the identity
    /// log, and any number of worker processes divide the shares among
    /// themselves through the consumer group `<application-id>-shares`
    /// (cooperative-sticky): a share moves, with its state, when processes
    /// join or leave. One process runs one share per thread.
    pub instances: u32,
    /// Commit at least this often while records flow.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// ...or after this many input records.
    pub commit_max_records: usize,
    /// Records taken per poll.
    pub max_poll_records: usize,
    /// Input payloads above this size are dead-lettered.
    pub max_payload_bytes: usize,
    /// When no record arrived for this long, advance the watermark by the wall
    /// clock (so timers fire on quiet streams). `0s` disables it (replays of
    /// historical data should keep it off).
    #[serde(with = "humantime_serde")]
    pub idle_advance_after: Duration,
    /// SIGTERM: time allowed to commit and leave the group.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Timeout of transaction and commit calls.
    #[serde(with = "humantime_serde")]
    pub kafka_timeout: Duration,
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            mode: Mode::ExactlyOnce,
            instances: 1,
            commit_interval: Duration::from_millis(100),
            commit_max_records: 5000,
            max_poll_records: 1000,
            max_payload_bytes: 1 << 20,
            idle_advance_after: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            kafka_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct State {
    /// RocksDB directory of this worker (a cache of the changelog topic).
    pub dir: PathBuf,
    /// Shared block cache, bytes.
    pub block_cache_bytes: usize,
    /// Write-buffer budget across column families, bytes.
    pub write_buffer_bytes: usize,
    /// Journeys kept in memory (least recently used dropped first, an
    /// estimate of their size), bytes; the others are read from RocksDB when
    /// their customer is next seen. 0 keeps every journey in memory (and
    /// loads them all at start-up).
    pub journey_cache_bytes: usize,
    /// The identity graph kept in memory (an estimate of its size), bytes,
    /// when journeys are cached (`journey-cache-bytes` > 0) and one instance
    /// runs: once the graph passes it after a commit, customers whose
    /// journey is not in memory are dropped, and read from RocksDB when
    /// next seen. 0 keeps the whole graph in memory (loaded at start-up).
    /// Several instances always keep the whole graph (each resolves
    /// events against all of it).
    pub identity_cache_bytes: usize,
    /// Time allowed to read the changelog when restoring.
    #[serde(with = "humantime_serde")]
    pub restore_timeout: Duration,
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: PathBuf::from("journey-state"),
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 64 << 20,
            journey_cache_bytes: 128 << 20,
            identity_cache_bytes: 64 << 20,
            restore_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Http {
    /// Address of `/metrics`, `/health/live` and `/health/ready`; empty disables.
    pub listen: String,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: String,
    /// Filter, e.g. `info` or `journey=debug,rdkafka=warn` (`RUST_LOG` wins).
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

const SECRET_HINTS: [&str; 4] = ["password", "secret", "token", "key.pem"];

impl Config {
    /// Loads a file (TOML, or YAML by extension), applies `JOURNEY__` environment
    /// overrides and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut tree = match path {
            None => toml::Value::try_from(Config::default())?,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let is_yaml =
                    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
                if is_yaml {
                    let v: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| {
                        format!("config file {} is not valid YAML", p.display())
                    })?;
                    toml::Value::try_from(v)
                        .with_context(|| format!("config file {}", p.display()))?
                } else {
                    text.parse::<toml::Table>()
                        .map(toml::Value::Table)
                        .with_context(|| format!("config file {} is not valid TOML", p.display()))?
                }
            }
        };
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("JOURNEY__") else {
                continue;
            };
            let path: Vec<String> = rest
                .split("__")
                .map(|s| s.to_ascii_lowercase().replace('_', "-"))
                .collect();
            set_path(&mut tree, &path, &v).with_context(|| format!("environment override {k}"))?;
        }
        let where_ = path.map_or("the defaults".to_string(), |p| p.display().to_string());
        let mut cfg: Config = serde_path_to_error::deserialize(tree)
            .map_err(|e| {
                let path = e.path().to_string();
                anyhow::anyhow!("{path}: {}", e.into_inner().message().trim())
            })
            .with_context(|| format!("invalid configuration in {where_}"))?;
        cfg.derive_internal_topics();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Internal topic names left empty derive from the application id, as in
    /// Kafka Streams.
    fn derive_internal_topics(&mut self) {
        let app = self.kafka.application_id.clone();
        let t = &mut self.topics;
        for (name, suffix) in [
            (&mut t.changelog, "state-changelog"),
            (&mut t.repartition, "repartition"),
            (&mut t.identity_log, "identity-log"),
            (&mut t.shares, "shares"),
        ] {
            if name.trim().is_empty() {
                *name = format!("{app}-{suffix}");
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if self.kafka.brokers.trim().is_empty() {
            bail!("kafka.brokers is empty: set it or JOURNEY__KAFKA__BROKERS");
        }
        if self.kafka.application_id.trim().is_empty() {
            bail!("kafka.application-id is empty");
        }
        for (name, v) in [
            ("input-partitions", self.topics.input_partitions),
            ("output-partitions", self.topics.output_partitions),
            ("replication", self.topics.replication),
        ] {
            if v < 1 {
                bail!("topics.{name} must be at least 1, got {v}");
            }
        }
        let p = &self.processing;
        if p.instances == 0 {
            bail!("processing.instances must be at least 1");
        }
        if p.instances as i32 > self.topics.input_partitions {
            bail!(
                "processing.instances ({}) is more than topics.input-partitions ({}): some shares would own nothing",
                p.instances,
                self.topics.input_partitions
            );
        }
        if self.processing.max_poll_records == 0 || self.processing.commit_max_records == 0 {
            bail!("processing.max-poll-records and commit-max-records must be at least 1");
        }
        if self.engine.out_of_order_ms < 0 {
            bail!("engine.out-of-order-ms must not be negative");
        }
        if self.engine.customer_ttl_ms < 0 {
            bail!("engine.customer-ttl-ms must not be negative (0 turns expiry off)");
        }
        if self.engine.customer_ttl_ms > 0 && self.processing.instances > 1 {
            bail!(
                "engine.customer-ttl-ms is not supported with processing.instances > 1 yet: every instance holds the whole identity graph, and forgetting a customer in one would route its next events differently from the others"
            );
        }
        if self.models.0.is_empty() {
            bail!("models: name at least one stage model");
        }
        self.stage_models()?;
        Ok(())
    }

    /// Loads the configured stage models.
    pub fn stage_models(&self) -> Result<Vec<StageModel>> {
        let mut out: Vec<StageModel> = Vec::new();
        for m in &self.models.0 {
            let model = if let Some(b) = StageModel::builtin(m) {
                b
            } else {
                let p = PathBuf::from(m);
                let text = std::fs::read_to_string(&p).with_context(|| {
                    format!("model {m:?} is neither a builtin (funnel5, loyalty5, decision4) nor a readable file")
                })?;
                if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    StageModel::from_yaml(m, &text)?
                } else {
                    StageModel::from_toml(m, &text)?
                }
            };
            if out.iter().any(|o| o.name() == model.name()) {
                bail!("models: two models are named {:?}", model.name());
            }
            out.push(model);
        }
        Ok(out)
    }

    /// Kafka client settings.
    pub fn client(&self) -> ClientConfig {
        ClientConfig {
            brokers: self.kafka.brokers.clone(),
            properties: self.kafka.properties.clone(),
        }
    }

    /// The consumer group member's static identity, if static membership is on.
    pub fn group_instance_id(&self) -> Option<String> {
        match &self.kafka.group_instance_id {
            Some(id) if id.is_empty() => None,
            Some(id) => Some(id.clone()),
            None => Some(format!(
                "{}-{}",
                self.kafka.application_id,
                std::env::var("JOURNEY_INSTANCE_ID").unwrap_or_else(|_| "0".into())
            )),
        }
    }

    /// The configuration as TOML with secrets redacted.
    pub fn redacted(&self) -> String {
        let mut c = self.clone();
        for (k, v) in c.kafka.properties.iter_mut() {
            if SECRET_HINTS.iter().any(|h| k.contains(h)) {
                *v = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&c).unwrap_or_default()
    }
}

fn set_path(tree: &mut toml::Value, path: &[String], raw: &str) -> Result<()> {
    let mut node = tree;
    for (i, key) in path.iter().enumerate() {
        let table = node
            .as_table_mut()
            .with_context(|| format!("{} is not a section", path[..i].join(".")))?;
        if i + 1 == path.len() {
            let value = parse_scalar(raw);
            table.insert(key.clone(), value);
            return Ok(());
        }
        // librdkafka properties keep dots: JOURNEY__KAFKA__PROPERTIES__SECURITY.PROTOCOL
        node = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_default_file_equals_the_defaults() {
        let text = include_str!("../../../deploy/journey.toml");
        let parsed: Config = toml::from_str(text).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn env_overrides_apply_and_unknown_keys_fail() {
        let env = vec![
            (
                "JOURNEY__KAFKA__BROKERS".to_string(),
                "10.0.0.1:9093".to_string(),
            ),
            (
                "JOURNEY__PROCESSING__COMMIT_INTERVAL".to_string(),
                "250ms".to_string(),
            ),
            (
                "JOURNEY__TOPICS__INPUT_PARTITIONS".to_string(),
                "6".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.kafka.brokers, "10.0.0.1:9093");
        assert_eq!(c.processing.commit_interval, Duration::from_millis(250));
        assert_eq!(c.topics.input_partitions, 6);
        let err = Config::load(
            None,
            vec![("JOURNEY__KAFKA__BROKRS".to_string(), "x".to_string())],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("brokrs"), "{err:#}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[processing]\ncommit-interval = \"soon\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), vec![]).unwrap_err());
        assert!(
            err.contains("c.toml") && err.contains("commit-interval"),
            "{err}"
        );
        std::fs::write(&p, "models = [\"nope\"]\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), vec![]).unwrap_err());
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut c = Config::default();
        c.kafka
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        assert!(!c.redacted().contains("hunter2"));
    }
}
