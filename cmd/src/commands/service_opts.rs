//! `service create` / `service update` flags, and how they become a Docker `ServiceSpec`.
//!
//! Values are read the way the docker CLI reads them (Go durations such as `1m30s`, memory
//! such as `64M`, CPUs such as `0.5`, `--mount` CSV, env files), with docker's messages, and
//! every check that needs no daemon happens here, before the CLI contacts it. Everything
//! in this module is pure except reading `--env-file` files and the CLI's own environment
//! for bare `-e KEY` flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use shoal_store::model::{
    ContainerSpec, Empty, HealthConfig, Limit, Mode, Mount, Placement, PlacementPreference,
    ReplicatedJobMode, ReplicatedMode, Reservation, ResourceRequirements, RestartPolicy,
    ServiceMode, ServiceSpec, SpreadOver, TaskSpec, TmpfsOptions, UpdateConfig, VolumeOptions,
};

use crate::format;

/// Why flags could not become a spec.
#[derive(Debug, thiserror::Error)]
pub enum OptsError {
    /// A flag's value could not be read (docker's flag-parsing error; exit code 125).
    #[error("invalid argument \"{value}\" for \"{flag}\" flag: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// A flag that only applies to some service modes.
    #[error("{flag} can only be used with {modes} mode")]
    ModeOnly {
        flag: &'static str,
        modes: &'static str,
    },
    /// `--mode` is not one of the four modes.
    #[error(
        "Unknown mode: {mode}, only replicated, global, replicated-job and global-job supported"
    )]
    UnknownMode { mode: String },
    /// `--no-healthcheck` together with `--health-*`.
    #[error("--no-healthcheck conflicts with --health-* options")]
    HealthConflict,
    /// `update --rollback` together with flags that change the spec.
    #[error("other flags may not be combined with --rollback")]
    RollbackWithOtherFlags,
    /// An `--env-file` could not be read.
    #[error("open {}: {source}", path.display())]
    EnvFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of an `--env-file` is not `KEY=VALUE` or `KEY`.
    #[error("{}: line {line}: poorly formatted environment: {reason}", path.display())]
    EnvFileLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Two `--mount-add` with the same target.
    #[error("duplicate mount target {target}")]
    DuplicateMountTarget { target: String },
}

impl OptsError {
    /// Whether this is a flag-parsing error (docker exits 125 for those, 1 otherwise).
    pub fn is_flag_error(&self) -> bool {
        matches!(self, OptsError::Flag { .. })
    }
}

fn flag_err(flag: &'static str, value: &str, reason: impl Into<String>) -> OptsError {
    OptsError::Flag {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Flags

/// Flags shared by `service create` and `service update`.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct SpecFlags {
    /// Number of tasks.
    #[arg(long, value_name = "uint", allow_hyphen_values = true)]
    pub replicas: Option<String>,
    /// Number of job tasks to run concurrently (default equal to --replicas).
    #[arg(
        long = "max-concurrent",
        value_name = "uint",
        allow_hyphen_values = true
    )]
    pub max_concurrent: Option<String>,
    /// Maximum number of tasks per node (default 0 = unlimited).
    #[arg(
        long = "replicas-max-per-node",
        value_name = "uint",
        allow_hyphen_values = true
    )]
    pub replicas_max_per_node: Option<String>,
    /// Reserve CPUs.
    #[arg(
        long = "reserve-cpu",
        value_name = "decimal",
        allow_hyphen_values = true
    )]
    pub reserve_cpu: Option<String>,
    /// Reserve Memory.
    #[arg(
        long = "reserve-memory",
        value_name = "bytes",
        allow_hyphen_values = true
    )]
    pub reserve_memory: Option<String>,
    /// Limit CPUs.
    #[arg(long = "limit-cpu", value_name = "decimal", allow_hyphen_values = true)]
    pub limit_cpu: Option<String>,
    /// Limit Memory.
    #[arg(
        long = "limit-memory",
        value_name = "bytes",
        allow_hyphen_values = true
    )]
    pub limit_memory: Option<String>,
    /// Limit maximum number of processes (default 0 = unlimited).
    #[arg(long = "limit-pids", value_name = "int", allow_hyphen_values = true)]
    pub limit_pids: Option<String>,
    /// Restart when condition is met ("none", "on-failure", "any") (default "any").
    #[arg(long = "restart-condition", value_name = "string")]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (ns|us|ms|s|m|h) (default 5s).
    #[arg(
        long = "restart-delay",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub restart_delay: Option<String>,
    /// Maximum number of restarts before giving up.
    #[arg(
        long = "restart-max-attempts",
        value_name = "uint",
        allow_hyphen_values = true
    )]
    pub restart_max_attempts: Option<String>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h).
    #[arg(
        long = "restart-window",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub restart_window: Option<String>,
    /// Maximum number of tasks updated simultaneously (0 to update all at once) (default 1).
    #[arg(
        long = "update-parallelism",
        value_name = "uint",
        allow_hyphen_values = true
    )]
    pub update_parallelism: Option<String>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s).
    #[arg(
        long = "update-delay",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub update_delay: Option<String>,
    /// Action on update failure ("pause", "continue", "rollback") (default "pause").
    #[arg(long = "update-failure-action", value_name = "string")]
    pub update_failure_action: Option<String>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s).
    #[arg(
        long = "update-monitor",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub update_monitor: Option<String>,
    /// Failure rate to tolerate during an update (default 0).
    #[arg(
        long = "update-max-failure-ratio",
        value_name = "float",
        allow_hyphen_values = true
    )]
    pub update_max_failure_ratio: Option<String>,
    /// Update order ("start-first", "stop-first") (default "stop-first").
    #[arg(long = "update-order", value_name = "string")]
    pub update_order: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once)
    /// (default 1).
    #[arg(
        long = "rollback-parallelism",
        value_name = "uint",
        allow_hyphen_values = true
    )]
    pub rollback_parallelism: Option<String>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s).
    #[arg(
        long = "rollback-delay",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub rollback_delay: Option<String>,
    /// Action on rollback failure ("pause", "continue") (default "pause").
    #[arg(long = "rollback-failure-action", value_name = "string")]
    pub rollback_failure_action: Option<String>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) (default 5s).
    #[arg(
        long = "rollback-monitor",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub rollback_monitor: Option<String>,
    /// Failure rate to tolerate during a rollback (default 0).
    #[arg(
        long = "rollback-max-failure-ratio",
        value_name = "float",
        allow_hyphen_values = true
    )]
    pub rollback_max_failure_ratio: Option<String>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first").
    #[arg(long = "rollback-order", value_name = "string")]
    pub rollback_order: Option<String>,
    /// Command to run to check health.
    #[arg(long = "health-cmd", value_name = "string")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(
        long = "health-interval",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(
        long = "health-timeout",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(
        long = "health-retries",
        value_name = "int",
        allow_hyphen_values = true
    )]
    pub health_retries: Option<String>,
    /// Start period for the container to initialize before counting retries towards
    /// unstable (ms|s|m|h).
    #[arg(
        long = "health-start-period",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s).
    #[arg(
        long = "stop-grace-period",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub stop_grace_period: Option<String>,
    /// Signal to stop the container.
    #[arg(long = "stop-signal", value_name = "string")]
    pub stop_signal: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "string")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long, value_name = "string")]
    pub user: Option<String>,
    /// Container hostname (templates: {{.Service.Name}}, {{.Task.Slot}}, {{.Node.Hostname}}…).
    #[arg(long, value_name = "string")]
    pub hostname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long, value_name = "command")]
    pub entrypoint: Option<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long = "read-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub read_only: Option<bool>,
    /// Use an init inside each service container to forward signals and reap processes.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub init: Option<bool>,
    /// Send registry authentication details to swarm agents.
    #[arg(long = "with-registry-auth")]
    pub with_registry_auth: bool,
    /// Do not query the registry to resolve image digest and supported platforms.
    #[arg(long = "no-resolve-image")]
    pub no_resolve_image: bool,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `service create [OPTIONS] IMAGE [COMMAND] [ARG...]`.
#[derive(Debug, Args, Clone)]
pub struct ServiceCreateArgs {
    /// Service name.
    #[arg(long, value_name = "string")]
    pub name: Option<String>,
    /// Service mode ("replicated", "global", "replicated-job", "global-job").
    #[arg(long, default_value = "replicated", value_name = "string")]
    pub mode: String,
    /// Set environment variables.
    #[arg(short = 'e', long = "env", value_name = "list")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file", value_name = "list")]
    pub env_file: Vec<PathBuf>,
    /// Service labels.
    #[arg(short = 'l', long = "label", value_name = "list")]
    pub label: Vec<String>,
    /// Container labels.
    #[arg(long = "container-label", value_name = "list")]
    pub container_label: Vec<String>,
    /// Placement constraints.
    #[arg(long = "constraint", value_name = "list")]
    pub constraint: Vec<String>,
    /// Add a placement preference (spread=node.labels.X).
    #[arg(long = "placement-pref", value_name = "pref")]
    pub placement_pref: Vec<String>,
    /// Attach a filesystem mount to the service.
    #[arg(long = "mount", value_name = "mount")]
    pub mount: Vec<String>,
    /// Add Linux capabilities.
    #[arg(long = "cap-add", value_name = "list")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop", value_name = "list")]
    pub cap_drop: Vec<String>,
    #[command(flatten)]
    pub spec: SpecFlags,
    /// The image, then the command and its arguments.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "IMAGE [COMMAND] [ARG...]")]
    pub image_and_command: Vec<String>,
}

/// `service update [OPTIONS] SERVICE`.
#[derive(Debug, Args, Clone, Default)]
pub struct ServiceUpdateArgs {
    /// Service image tag.
    #[arg(long, value_name = "string")]
    pub image: Option<String>,
    /// Service command args.
    #[arg(long, value_name = "command", allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Force update even if no changes require it.
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification.
    #[arg(long)]
    pub rollback: bool,
    /// Add or update an environment variable.
    #[arg(long = "env-add", value_name = "list")]
    pub env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long = "env-rm", value_name = "list")]
    pub env_rm: Vec<String>,
    /// Add or update a service label.
    #[arg(long = "label-add", value_name = "list")]
    pub label_add: Vec<String>,
    /// Remove a label by its key.
    #[arg(long = "label-rm", value_name = "list")]
    pub label_rm: Vec<String>,
    /// Add or update a container label.
    #[arg(long = "container-label-add", value_name = "list")]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key.
    #[arg(long = "container-label-rm", value_name = "list")]
    pub container_label_rm: Vec<String>,
    /// Add or update a placement constraint.
    #[arg(long = "constraint-add", value_name = "list")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint.
    #[arg(long = "constraint-rm", value_name = "list")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference.
    #[arg(long = "placement-pref-add", value_name = "pref")]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference.
    #[arg(long = "placement-pref-rm", value_name = "pref")]
    pub placement_pref_rm: Vec<String>,
    /// Add or update a mount on a service.
    #[arg(long = "mount-add", value_name = "mount")]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path.
    #[arg(long = "mount-rm", value_name = "list")]
    pub mount_rm: Vec<String>,
    /// Add Linux capabilities.
    #[arg(long = "cap-add", value_name = "list")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop", value_name = "list")]
    pub cap_drop: Vec<String>,
    #[command(flatten)]
    pub spec: SpecFlags,
    /// The service (name, ID or ID prefix).
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

impl ServiceUpdateArgs {
    /// Whether any flag that changes the spec was given (`--rollback`, `-d` and `-q` aside).
    fn changes_spec(&self) -> bool {
        let spec_flags = SpecFlags {
            detach: false,
            quiet: false,
            ..self.spec.clone()
        };
        self.image.is_some()
            || self.args.is_some()
            || self.force
            || !self.env_add.is_empty()
            || !self.env_rm.is_empty()
            || !self.label_add.is_empty()
            || !self.label_rm.is_empty()
            || !self.container_label_add.is_empty()
            || !self.container_label_rm.is_empty()
            || !self.constraint_add.is_empty()
            || !self.constraint_rm.is_empty()
            || !self.placement_pref_add.is_empty()
            || !self.placement_pref_rm.is_empty()
            || !self.mount_add.is_empty()
            || !self.mount_rm.is_empty()
            || !self.cap_add.is_empty()
            || !self.cap_drop.is_empty()
            || spec_flags != SpecFlags::default()
    }
}

// ---------------------------------------------------------------------------------------
// Value parsers (docker's flag types)

/// Go's `strconv.ParseUint(s, 0, 64)` (pflag's `uint64` flags): decimal, `0x`/`0o`/`0b`
/// prefixes, a leading `0` for octal, `_` between digits.
pub fn parse_go_uint(s: &str) -> Result<u64, String> {
    let syntax = || {
        format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            format::go_quote(s)
        )
    };
    let range = || {
        format!(
            "strconv.ParseUint: parsing {}: value out of range",
            format::go_quote(s)
        )
    };
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(r) = lower.strip_prefix("0x") {
        (r.to_owned(), 16)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (r.to_owned(), 8)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (r.to_owned(), 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (lower[1..].to_owned(), 8)
    } else {
        (lower.clone(), 10)
    };
    // Underscores only between digits (Go's underscoreOK, for base-0 parsing).
    if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return Err(syntax());
    }
    let digits = digits.replace('_', "");
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(syntax());
    }
    u64::from_str_radix(&digits, radix).map_err(|_| range())
}

/// Go's `strconv.ParseInt(s, 0, 64)` (pflag's `int`/`int64` flags).
pub fn parse_go_int(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let quoted = format::go_quote(s);
    let v = parse_go_uint(body).map_err(|e| {
        if e.ends_with("value out of range") {
            format!("strconv.ParseInt: parsing {quoted}: value out of range")
        } else {
            format!("strconv.ParseInt: parsing {quoted}: invalid syntax")
        }
    })?;
    let range = || format!("strconv.ParseInt: parsing {quoted}: value out of range");
    if neg {
        if v > i64::MAX as u64 + 1 {
            return Err(range());
        }
        Ok((v as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(v).map_err(|_| range())
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units (`300ms`, `1.5h`,
/// `2h45m`; units ns, us/µs, ms, s, m, h); `0` alone needs no unit. Nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let quoted = format::go_quote(s);
    let invalid = || format!("time: invalid duration {quoted}");
    let (neg, mut rest) = match s.chars().next() {
        Some('-') => (true, &s[1..]),
        Some('+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(invalid());
            }
        } else if int_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {quoted}"));
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {quoted}",
                    format::go_quote(unit)
                ));
            }
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            // Digits beyond nanosecond precision cannot change the result.
            let frac = &frac_part[..frac_part.len().min(18)];
            let num: u128 = frac.parse().map_err(|_| invalid())?;
            value += num * scale / 10u128.pow(frac.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 + u128::from(neg) {
            return Err(invalid());
        }
    }
    Ok(if neg {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    })
}

/// Go's `time.Duration.String()` (`5s`, `1m30s`, `1h0m0s`, `500ms`, `0s`), for `--pretty`.
pub fn go_duration_string(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".to_owned();
    }
    let frac = |v: u64, digits: u32| -> String {
        let p = 10u64.pow(digits);
        let f = v % p;
        if f == 0 {
            format!("{}", v / p)
        } else {
            let s = format!("{:0width$}", f, width = digits as usize);
            format!("{}.{}", v / p, s.trim_end_matches('0'))
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let secs = u / 1_000_000_000;
    let s = frac(u % 60_000_000_000, 9);
    let m = (secs / 60) % 60;
    let h = secs / 3600;
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// docker's `DurationOpt`: a Go duration that may not be negative.
fn duration_flag(flag: &'static str, v: &str) -> Result<i64, OptsError> {
    let d = parse_go_duration(v).map_err(|e| flag_err(flag, v, e))?;
    if d < 0 {
        return Err(flag_err(flag, v, "duration cannot be negative"));
    }
    Ok(d)
}

fn uint_flag(flag: &'static str, v: &str) -> Result<u64, OptsError> {
    parse_go_uint(v).map_err(|e| flag_err(flag, v, e))
}

fn int_flag(flag: &'static str, v: &str) -> Result<i64, OptsError> {
    parse_go_int(v).map_err(|e| flag_err(flag, v, e))
}

/// docker's `ParseCPUs`: a rational number of CPUs (`0.5`, `1.25`, `1/4`) as NanoCPUs.
pub fn parse_nano_cpus(v: &str) -> Result<i64, String> {
    let rational = || format!("failed to parse {v} as a rational number");
    let (num, den): (i128, i128) = if let Some((a, b)) = v.split_once('/') {
        let a: i128 = a.trim().parse().map_err(|_| rational())?;
        let b: i128 = b.trim().parse().map_err(|_| rational())?;
        if b == 0 {
            return Err(rational());
        }
        (a, b)
    } else {
        let (mantissa, exp) = match v.find(['e', 'E']) {
            Some(i) => (&v[..i], v[i + 1..].parse::<i32>().map_err(|_| rational())?),
            None => (v, 0),
        };
        let (neg, m) = match mantissa.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
        };
        let (int_part, frac_part) = m.split_once('.').unwrap_or((m, ""));
        if int_part.is_empty() && frac_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(rational());
        }
        let digits = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err("value is too precise".to_owned());
        }
        let mut n: i128 = digits.parse().map_err(|_| rational())?;
        if neg {
            n = -n;
        }
        let scale = frac_part.len() as i32 - exp;
        if !(-30..=30).contains(&scale) {
            return Err("value is too precise".to_owned());
        }
        if scale >= 0 {
            (n, 10i128.pow(scale as u32))
        } else {
            (n * 10i128.pow((-scale) as u32), 1)
        }
    };
    let nanos = num
        .checked_mul(1_000_000_000)
        .ok_or_else(|| "value is too large".to_owned())?;
    if nanos % den != 0 {
        return Err("value is too precise".to_owned());
    }
    let nanos = nanos / den;
    if nanos < 0 {
        return Err("value cannot be negative".to_owned());
    }
    i64::try_from(nanos).map_err(|_| "value is too large".to_owned())
}

fn cpu_flag(flag: &'static str, v: &str) -> Result<i64, OptsError> {
    parse_nano_cpus(v).map_err(|e| flag_err(flag, v, e))
}

/// docker's `MemBytes`: go-units `RAMInBytes` (`64M`, `1g`, `512k`).
fn memory_flag(flag: &'static str, v: &str) -> Result<i64, OptsError> {
    let b = format::parse_bytes(v).map_err(|e| flag_err(flag, v, e.to_string()))?;
    i64::try_from(b).map_err(|_| flag_err(flag, v, format!("invalid size: '{v}'")))
}

/// pflag's `float32` (the max-failure-ratio flags), kept within 0..=1 as swarmkit requires.
fn ratio_flag(flag: &'static str, v: &str) -> Result<f64, OptsError> {
    let f: f32 = v.parse().map_err(|_| {
        flag_err(
            flag,
            v,
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                format::go_quote(v)
            ),
        )
    })?;
    if !(0.0..=1.0).contains(&f) {
        return Err(flag_err(flag, v, "the ratio must be between 0 and 1"));
    }
    // Through the shortest decimal text, so 0.3 stays 0.3 and not 0.30000001192092896.
    Ok(f.to_string().parse().unwrap_or(f64::from(f)))
}

fn choice_flag(flag: &'static str, v: &str, allowed: &[&str]) -> Result<String, OptsError> {
    if allowed.contains(&v) {
        return Ok(v.to_owned());
    }
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    Err(flag_err(
        flag,
        v,
        format!("must be one of {}", list.join(", ")),
    ))
}

/// Applies `f` to an optional flag value.
fn opt<T>(
    v: &Option<String>,
    f: impl FnOnce(&str) -> Result<T, OptsError>,
) -> Result<Option<T>, OptsError> {
    v.as_deref().map(f).transpose()
}

/// A shell-like split of `--entrypoint` / `--args` (docker's `ShlexOpt`): whitespace
/// separates words; single quotes keep text as is; double quotes and backslashes escape.
pub fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("EOF found when expecting closing quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) if matches!(c, '"' | '\\' | '$' | '`' | '\n') => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("EOF found when expecting closing quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("EOF found when expecting closing quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("EOF found after escape character".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn shell_flag(flag: &'static str, v: &str) -> Result<Vec<String>, OptsError> {
    shell_split(v).map_err(|e| flag_err(flag, v, e))
}

// ---------------------------------------------------------------------------------------
// Structured flags

/// `KEY=VALUE` labels (`KEY` alone is an empty value), as docker's `ConvertKVStringsToMap`.
pub fn kv_map(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// docker's `ValidateEnv`: `KEY` alone takes its value from the CLI's environment.
fn env_value(kv: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if kv.contains('=') {
        return kv.to_owned();
    }
    match lookup(kv) {
        Some(v) => format!("{kv}={v}"),
        None => kv.to_owned(),
    }
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

/// Reads `--env-file`s as docker does: `KEY=VALUE` lines, `#` comments and blank lines
/// skipped, a bare `KEY` taken from the CLI's environment (and dropped when unset).
pub fn read_env_files(
    files: &[PathBuf],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, OptsError> {
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| OptsError::EnvFile {
            path: path.clone(),
            source,
        })?;
        for (n, raw) in text.lines().enumerate() {
            let line = if n == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (variable, value) = match line.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (line, None),
            };
            let variable = variable.trim_start();
            let line_err = |reason: String| OptsError::EnvFileLine {
                path: path.clone(),
                line: n + 1,
                reason,
            };
            if variable.is_empty() {
                return Err(line_err(format!("no variable name on line '{line}'")));
            }
            if variable.contains(char::is_whitespace) {
                return Err(line_err(format!(
                    "variable '{variable}' contains whitespaces"
                )));
            }
            match value {
                Some(v) => out.push(format!("{variable}={v}")),
                None => {
                    if let Some(v) = lookup(variable) {
                        out.push(format!("{variable}={v}"));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Later entries replace earlier ones with the same key (docker's env merge), in order.
fn merge_env(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in list {
        if out.contains(&e) {
            continue;
        }
        let k = env_key(&e).to_owned();
        out.retain(|x| env_key(x) != k);
        out.push(e);
    }
    out
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Splits one line of CSV (Go's `encoding/csv`, as `--mount` is read): fields separated
/// by commas, optionally double-quoted with `""` for a quote.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// docker's `--mount` syntax: `type=volume|bind|tmpfs,source=…,target=…,readonly,
/// volume-nocopy,volume-label=K=V,tmpfs-size=64m,tmpfs-mode=1770`.
pub fn parse_mount(flag: &'static str, value: &str) -> Result<Mount, OptsError> {
    let err = |reason: String| flag_err(flag, value, reason);
    let fields = csv_fields(value).map_err(|e| err(format!("parse error on line 1: {e}")))?;
    let mut m = Mount {
        kind: "volume".into(),
        ..Mount::default()
    };
    let mut volume: Option<VolumeOptions> = None;
    let mut tmpfs: Option<TmpfsOptions> = None;
    let mut bind_option = false;
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => m.read_only = true,
                "volume-nocopy" => volume.get_or_insert_with(Default::default).no_copy = true,
                _ => {
                    return Err(err(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        let bad_value = || err(format!("invalid value for {key}: {val}"));
        match key.as_str() {
            "type" => m.kind = val.to_lowercase(),
            "source" | "src" => m.source = val.to_owned(),
            "target" | "dst" | "destination" => m.target = val.to_owned(),
            "readonly" | "ro" => m.read_only = go_bool(val).ok_or_else(bad_value)?,
            "consistency" => {}
            "volume-nocopy" => {
                volume.get_or_insert_with(Default::default).no_copy =
                    go_bool(val).ok_or_else(bad_value)?;
            }
            "volume-label" => {
                let (k, v) = val.split_once('=').unwrap_or((val, ""));
                if !k.is_empty() {
                    volume
                        .get_or_insert_with(Default::default)
                        .labels
                        .insert(k.to_owned(), v.to_owned());
                }
            }
            "volume-driver" => {
                if val != "local" {
                    return Err(err(format!(
                        "volume driver {val:?} is not supported (only \"local\")"
                    )));
                }
                volume.get_or_insert_with(Default::default);
            }
            "tmpfs-size" => {
                let size = format::parse_bytes(val).map_err(|_| bad_value())?;
                tmpfs.get_or_insert_with(Default::default).size_bytes =
                    i64::try_from(size).map_err(|_| bad_value())?;
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(val, 8).map_err(|_| bad_value())?;
                tmpfs.get_or_insert_with(Default::default).mode = mode;
            }
            "bind-propagation" => {
                if val != "rprivate" {
                    return Err(err(format!(
                        "bind propagation {val:?} is not supported (mounts are rprivate)"
                    )));
                }
                bind_option = true;
            }
            "bind-nonrecursive" | "volume-opt" | "volume-subpath" => {
                return Err(err(format!("'{key}' is not supported")));
            }
            _ => return Err(err(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if m.kind.is_empty() {
        return Err(err("type is required".into()));
    }
    if !["volume", "bind", "tmpfs"].contains(&m.kind.as_str()) {
        return Err(err(format!(
            "invalid mount type '{}' (volume, bind or tmpfs)",
            m.kind
        )));
    }
    if m.target.is_empty() {
        return Err(err("target is required".into()));
    }
    if volume.is_some() && m.kind != "volume" {
        return Err(err(format!(
            "cannot mix 'volume-*' options with mount type '{}'",
            m.kind
        )));
    }
    if bind_option && m.kind != "bind" {
        return Err(err(format!(
            "cannot mix 'bind-*' options with mount type '{}'",
            m.kind
        )));
    }
    if tmpfs.is_some() && m.kind != "tmpfs" {
        return Err(err(format!(
            "cannot mix 'tmpfs-*' options with mount type '{}'",
            m.kind
        )));
    }
    if m.kind == "bind" && !m.source.starts_with('/') {
        return Err(err(format!(
            "invalid bind source {:?}: must be an absolute path",
            m.source
        )));
    }
    if m.kind == "tmpfs" && !m.source.is_empty() {
        return Err(err("source must not be specified for a tmpfs mount".into()));
    }
    m.volume_options = volume;
    m.tmpfs_options = tmpfs;
    Ok(m)
}

/// swarmkit's constraint syntax: `key==value` or `key!=value`, key `[a-z_][a-z0-9-_.]+`.
pub fn check_constraint(flag: &'static str, c: &str) -> Result<(), OptsError> {
    let err = |reason: String| flag_err(flag, c, reason);
    let Some((key, value)) = c.split_once("==").or_else(|| c.split_once("!=")) else {
        return Err(err("constraint expected one operator from ==, !=".into()));
    };
    // `a!=b==c` splits on the first operator found in swarmkit's order (== first).
    let key = key.trim();
    let value = value.trim();
    let mut kc = key.chars();
    let key_ok = key.len() >= 2
        && kc
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && kc.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !key_ok {
        return Err(err(format!("key '{key}' is invalid")));
    }
    let value_ok = !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || c.is_whitespace() || ":-_.*()?+[]\\^$|/".contains(c)
        });
    if !value_ok {
        return Err(err(format!("value '{value}' is invalid")));
    }
    Ok(())
}

/// `spread=node.labels.zone` → a placement preference.
pub fn parse_placement_pref(flag: &'static str, v: &str) -> Result<PlacementPreference, OptsError> {
    let Some((strategy, arg)) = v.split_once('=').filter(|(s, _)| !s.is_empty()) else {
        return Err(flag_err(
            flag,
            v,
            "placement preference must be of the format \"<strategy>=<arg>\"",
        ));
    };
    if strategy != "spread" {
        return Err(flag_err(
            flag,
            v,
            format!("unsupported placement preference {strategy} (only spread is supported)"),
        ));
    }
    Ok(PlacementPreference {
        spread: SpreadOver {
            spread_descriptor: arg.to_owned(),
        },
    })
}

/// docker's capability names: upper case with a `CAP_` prefix (`ALL` stays `ALL`).
pub fn normalize_cap(c: &str) -> String {
    let c = c.trim().to_uppercase();
    if c == "ALL" || c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// docker's `EffectiveCapAddCapDrop`: `ALL` trumps the rest of its list, and a capability
/// both added and dropped is added.
fn effective_caps(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let mut add: std::collections::BTreeSet<String> =
        add.iter().map(|c| normalize_cap(c)).collect();
    let mut drop: std::collections::BTreeSet<String> =
        drop.iter().map(|c| normalize_cap(c)).collect();
    if add.contains("ALL") {
        add = ["ALL".to_owned()].into();
    }
    if drop.contains("ALL") {
        drop = ["ALL".to_owned()].into();
    }
    drop.retain(|c| !add.contains(c));
    (add.into_iter().collect(), drop.into_iter().collect())
}

// ---------------------------------------------------------------------------------------
// Parsed scalar values

/// An update or rollback config's flags, read.
#[derive(Debug, Default)]
struct ConfigValues {
    parallelism: Option<u64>,
    delay: Option<i64>,
    failure_action: Option<String>,
    monitor: Option<i64>,
    max_failure_ratio: Option<f64>,
    order: Option<String>,
}

impl ConfigValues {
    fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay.is_some()
            || self.failure_action.is_some()
            || self.monitor.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    fn apply(&self, c: &mut UpdateConfig) {
        if let Some(v) = self.parallelism {
            c.parallelism = v;
        }
        if let Some(v) = self.delay {
            c.delay = v;
        }
        if let Some(v) = &self.failure_action {
            c.failure_action = v.clone();
        }
        if let Some(v) = self.monitor {
            c.monitor = v;
        }
        if let Some(v) = self.max_failure_ratio {
            c.max_failure_ratio = v;
        }
        if let Some(v) = &self.order {
            c.order = v.clone();
        }
    }
}

/// Every scalar flag of [`SpecFlags`], read and checked.
#[derive(Debug, Default)]
struct Values {
    replicas: Option<u64>,
    max_concurrent: Option<u64>,
    max_per_node: Option<u64>,
    reserve_cpu: Option<i64>,
    reserve_memory: Option<i64>,
    limit_cpu: Option<i64>,
    limit_memory: Option<i64>,
    limit_pids: Option<i64>,
    restart_condition: Option<String>,
    restart_delay: Option<i64>,
    restart_max_attempts: Option<u64>,
    restart_window: Option<i64>,
    update: ConfigValues,
    rollback: ConfigValues,
    health_interval: Option<i64>,
    health_timeout: Option<i64>,
    health_start_period: Option<i64>,
    health_retries: Option<i64>,
    stop_grace_period: Option<i64>,
    entrypoint: Option<Vec<String>>,
}

impl Values {
    fn read(f: &SpecFlags) -> Result<Values, OptsError> {
        let duration = |flag: &'static str, v: &Option<String>| opt(v, |s| duration_flag(flag, s));
        let health_retries = opt(&f.health_retries, |s| int_flag("--health-retries", s))?;
        if let (Some(r), Some(raw)) = (health_retries, &f.health_retries)
            && r < 0
        {
            return Err(flag_err(
                "--health-retries",
                raw,
                "retries cannot be negative",
            ));
        }
        Ok(Values {
            replicas: opt(&f.replicas, |s| uint_flag("--replicas", s))?,
            max_concurrent: opt(&f.max_concurrent, |s| uint_flag("--max-concurrent", s))?,
            max_per_node: opt(&f.replicas_max_per_node, |s| {
                uint_flag("--replicas-max-per-node", s)
            })?,
            reserve_cpu: opt(&f.reserve_cpu, |s| cpu_flag("--reserve-cpu", s))?,
            reserve_memory: opt(&f.reserve_memory, |s| memory_flag("--reserve-memory", s))?,
            limit_cpu: opt(&f.limit_cpu, |s| cpu_flag("--limit-cpu", s))?,
            limit_memory: opt(&f.limit_memory, |s| memory_flag("--limit-memory", s))?,
            limit_pids: opt(&f.limit_pids, |s| int_flag("--limit-pids", s))?,
            restart_condition: opt(&f.restart_condition, |s| {
                choice_flag("--restart-condition", s, &["none", "on-failure", "any"])
            })?,
            restart_delay: duration("--restart-delay", &f.restart_delay)?,
            restart_max_attempts: opt(&f.restart_max_attempts, |s| {
                uint_flag("--restart-max-attempts", s)
            })?,
            restart_window: duration("--restart-window", &f.restart_window)?,
            update: ConfigValues {
                parallelism: opt(&f.update_parallelism, |s| {
                    uint_flag("--update-parallelism", s)
                })?,
                delay: duration("--update-delay", &f.update_delay)?,
                failure_action: opt(&f.update_failure_action, |s| {
                    choice_flag(
                        "--update-failure-action",
                        s,
                        &["pause", "continue", "rollback"],
                    )
                })?,
                monitor: duration("--update-monitor", &f.update_monitor)?,
                max_failure_ratio: opt(&f.update_max_failure_ratio, |s| {
                    ratio_flag("--update-max-failure-ratio", s)
                })?,
                order: opt(&f.update_order, |s| {
                    choice_flag("--update-order", s, &["start-first", "stop-first"])
                })?,
            },
            rollback: ConfigValues {
                parallelism: opt(&f.rollback_parallelism, |s| {
                    uint_flag("--rollback-parallelism", s)
                })?,
                delay: duration("--rollback-delay", &f.rollback_delay)?,
                failure_action: opt(&f.rollback_failure_action, |s| {
                    choice_flag("--rollback-failure-action", s, &["pause", "continue"])
                })?,
                monitor: duration("--rollback-monitor", &f.rollback_monitor)?,
                max_failure_ratio: opt(&f.rollback_max_failure_ratio, |s| {
                    ratio_flag("--rollback-max-failure-ratio", s)
                })?,
                order: opt(&f.rollback_order, |s| {
                    choice_flag("--rollback-order", s, &["start-first", "stop-first"])
                })?,
            },
            health_interval: duration("--health-interval", &f.health_interval)?,
            health_timeout: duration("--health-timeout", &f.health_timeout)?,
            health_start_period: duration("--health-start-period", &f.health_start_period)?,
            health_retries,
            stop_grace_period: duration("--stop-grace-period", &f.stop_grace_period)?,
            entrypoint: opt(&f.entrypoint, |s| shell_flag("--entrypoint", s))?,
        })
    }

    fn has_health_settings(&self, f: &SpecFlags) -> bool {
        f.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_start_period.is_some()
            || self.health_retries.is_some()
    }

    fn any_limit(&self) -> bool {
        self.limit_cpu.is_some() || self.limit_memory.is_some() || self.limit_pids.is_some()
    }

    fn any_reservation(&self) -> bool {
        self.reserve_cpu.is_some() || self.reserve_memory.is_some()
    }

    fn any_restart(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
    }

    fn apply_limits(&self, l: &mut Limit) {
        if let Some(v) = self.limit_cpu {
            l.nano_cpus = v;
        }
        if let Some(v) = self.limit_memory {
            l.memory_bytes = v;
        }
        if let Some(v) = self.limit_pids {
            l.pids = v;
        }
    }

    fn apply_reservations(&self, r: &mut Reservation) {
        if let Some(v) = self.reserve_cpu {
            r.nano_cpus = v;
        }
        if let Some(v) = self.reserve_memory {
            r.memory_bytes = v;
        }
    }

    fn apply_restart(&self, p: &mut RestartPolicy) {
        if let Some(v) = &self.restart_condition {
            p.condition = v.clone();
        }
        if let Some(v) = self.restart_delay {
            p.delay = Some(v);
        }
        if let Some(v) = self.restart_max_attempts {
            p.max_attempts = v;
        }
        if let Some(v) = self.restart_window {
            p.window = v;
        }
    }
}

/// The restart policy docker's CLI sends by default: `any` (jobs: `on-failure`), 5 s delay.
fn default_restart_policy(job: bool) -> RestartPolicy {
    RestartPolicy {
        condition: if job { "on-failure" } else { "any" }.into(),
        delay: Some(5_000_000_000),
        max_attempts: 0,
        window: 0,
    }
}

/// The service mode from `--mode`, `--replicas`, `--max-concurrent`, with docker's checks.
fn service_mode(mode: &str, v: &Values) -> Result<ServiceMode, OptsError> {
    const REPLICAS: OptsError = OptsError::ModeOnly {
        flag: "replicas",
        modes: "replicated or replicated-job",
    };
    const MAX_PER_NODE: OptsError = OptsError::ModeOnly {
        flag: "replicas-max-per-node",
        modes: "replicated or replicated-job",
    };
    const MAX_CONCURRENT: OptsError = OptsError::ModeOnly {
        flag: "max-concurrent",
        modes: "replicated-job",
    };
    match mode {
        "replicated" => {
            if v.max_concurrent.is_some() {
                return Err(MAX_CONCURRENT);
            }
            Ok(ServiceMode {
                replicated: Some(ReplicatedMode {
                    replicas: v.replicas.unwrap_or(1),
                }),
                ..Default::default()
            })
        }
        "global" | "global-job" => {
            if v.replicas.is_some() {
                return Err(REPLICAS);
            }
            if v.max_per_node.is_some_and(|m| m > 0) {
                return Err(MAX_PER_NODE);
            }
            if v.max_concurrent.is_some() {
                return Err(MAX_CONCURRENT);
            }
            Ok(if mode == "global" {
                ServiceMode {
                    global: Some(Empty {}),
                    ..Default::default()
                }
            } else {
                ServiceMode {
                    global_job: Some(Empty {}),
                    ..Default::default()
                }
            })
        }
        "replicated-job" => {
            let concurrent = v.max_concurrent.or(v.replicas).unwrap_or(1);
            Ok(ServiceMode {
                replicated_job: Some(ReplicatedJobMode {
                    max_concurrent: concurrent,
                    total_completions: v.replicas.unwrap_or(concurrent),
                }),
                ..Default::default()
            })
        }
        other => Err(OptsError::UnknownMode {
            mode: other.to_owned(),
        }),
    }
}

/// The health check from `--health-*` / `--no-healthcheck` (None: keep the image's).
fn health_config(f: &SpecFlags, v: &Values) -> Result<Option<HealthConfig>, OptsError> {
    let have = v.has_health_settings(f);
    if f.no_healthcheck {
        if have {
            return Err(OptsError::HealthConflict);
        }
        return Ok(Some(HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        }));
    }
    if !have {
        return Ok(None);
    }
    Ok(Some(HealthConfig {
        test: match f.health_cmd.as_deref() {
            Some(cmd) if !cmd.is_empty() => vec!["CMD-SHELL".into(), cmd.into()],
            _ => Vec::new(),
        },
        interval: v.health_interval.unwrap_or(0),
        timeout: v.health_timeout.unwrap_or(0),
        start_period: v.health_start_period.unwrap_or(0),
        retries: v.health_retries.unwrap_or(0),
    }))
}

// ---------------------------------------------------------------------------------------
// create

/// The spec `service create` sends, with the defaults docker's CLI sends explicitly.
/// `lookup` reads the CLI's environment (bare `-e KEY`).
pub fn create_spec(
    a: &ServiceCreateArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ServiceSpec, OptsError> {
    let f = &a.spec;
    let v = Values::read(f)?;
    let mut mounts = Vec::new();
    for m in &a.mount {
        mounts.push(parse_mount("--mount", m)?);
    }
    for c in &a.constraint {
        check_constraint("--constraint", c)?;
    }
    let mut prefs = Vec::new();
    for p in &a.placement_pref {
        prefs.push(parse_placement_pref("--placement-pref", p)?);
    }
    let mut env = read_env_files(&a.env_file, lookup)?;
    env.extend(a.env.iter().map(|e| env_value(e, lookup)));
    let env = merge_env(env);
    let healthcheck = health_config(f, &v)?;
    let mode = service_mode(&a.mode, &v)?;
    let job = mode.is_job();

    let mut it = a.image_and_command.iter();
    let image = it.next().cloned().unwrap_or_default();
    let args: Vec<String> = it.cloned().collect();
    let (cap_add, cap_drop) = effective_caps(&a.cap_add, &a.cap_drop);

    let container = ContainerSpec {
        image,
        labels: kv_map(&a.container_label),
        command: v.entrypoint.clone().filter(|e| !e.is_empty()),
        args: (!args.is_empty()).then_some(args),
        hostname: f.hostname.clone().unwrap_or_default(),
        env,
        dir: f.workdir.clone().unwrap_or_default(),
        user: f.user.clone().unwrap_or_default(),
        mounts,
        stop_signal: f.stop_signal.clone().unwrap_or_default(),
        stop_grace_period: v.stop_grace_period,
        healthcheck,
        read_only: f.read_only.unwrap_or(false),
        capability_add: cap_add,
        capability_drop: cap_drop,
        init: f.init,
    };

    let resources = (v.any_limit() || v.any_reservation()).then(|| {
        let mut r = ResourceRequirements::default();
        if v.any_limit() {
            let mut l = Limit::default();
            v.apply_limits(&mut l);
            r.limits = Some(l);
        }
        if v.any_reservation() {
            let mut res = Reservation::default();
            v.apply_reservations(&mut res);
            r.reservations = Some(res);
        }
        r
    });
    let mut restart = default_restart_policy(job);
    v.apply_restart(&mut restart);
    let placement = (!a.constraint.is_empty() || !prefs.is_empty() || v.max_per_node.is_some())
        .then(|| Placement {
            constraints: a.constraint.clone(),
            preferences: prefs,
            max_replicas: v.max_per_node.unwrap_or(0),
            platforms: Vec::new(),
        });

    // Jobs have no rolling updates: docker sends no update or rollback config for them.
    let (update_config, rollback_config) = if job {
        (None, None)
    } else {
        let mut u = UpdateConfig::default();
        v.update.apply(&mut u);
        let mut r = UpdateConfig::default();
        v.rollback.apply(&mut r);
        (Some(u), Some(r))
    };

    Ok(ServiceSpec {
        name: a.name.clone().unwrap_or_default(),
        labels: kv_map(&a.label),
        task_template: TaskSpec {
            container_spec: container,
            resources,
            restart_policy: Some(restart),
            placement,
            force_update: 0,
            networks: Vec::new(),
            log_driver: None,
        },
        mode,
        update_config,
        rollback_config,
        endpoint_spec: None,
    })
}

// ---------------------------------------------------------------------------------------
// update

/// Checks the flags of `service update` that need no daemon: values, `--rollback` alone.
pub fn check_update(a: &ServiceUpdateArgs) -> Result<(), OptsError> {
    if a.rollback && a.changes_spec() {
        return Err(OptsError::RollbackWithOtherFlags);
    }
    Values::read(&a.spec)?;
    for m in &a.mount_add {
        parse_mount("--mount-add", m)?;
    }
    for c in &a.constraint_add {
        check_constraint("--constraint-add", c)?;
    }
    for p in a.placement_pref_add.iter() {
        parse_placement_pref("--placement-pref-add", p)?;
    }
    for p in a.placement_pref_rm.iter() {
        parse_placement_pref("--placement-pref-rm", p)?;
    }
    if let Some(s) = &a.args {
        shell_flag("--args", s)?;
    }
    Ok(())
}

/// Changes `spec` (the service's current spec) as `service update` flags say, with
/// docker's merge rules for the `-add`/`-rm` lists.
pub fn apply_update(
    spec: &mut ServiceSpec,
    a: &ServiceUpdateArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), OptsError> {
    let f = &a.spec;
    let v = Values::read(f)?;

    // Mode.
    if let Some(n) = v.replicas {
        if let Some(r) = spec.mode.replicated.as_mut() {
            r.replicas = n;
        } else if let Some(j) = spec.mode.replicated_job.as_mut() {
            j.total_completions = n;
        } else if matches!(spec.mode.get(), Mode::Replicated { .. }) {
            // No mode at all reads as replicated.
            spec.mode.replicated = Some(ReplicatedMode { replicas: n });
        } else {
            return Err(OptsError::ModeOnly {
                flag: "replicas",
                modes: "replicated or replicated-job",
            });
        }
    }
    if let Some(n) = v.max_concurrent {
        match spec.mode.replicated_job.as_mut() {
            Some(j) => j.max_concurrent = n,
            None => {
                return Err(OptsError::ModeOnly {
                    flag: "max-concurrent",
                    modes: "replicated-job",
                });
            }
        }
    }
    let job = spec.mode.is_job();

    // Service labels.
    for k in &a.label_rm {
        spec.labels.remove(k);
    }
    spec.labels.extend(kv_map(&a.label_add));

    let tt = &mut spec.task_template;
    let c = &mut tt.container_spec;
    if let Some(image) = &a.image {
        c.image = image.clone();
    }
    if let Some(args) = &a.args {
        let args = shell_flag("--args", args)?;
        c.args = (!args.is_empty()).then_some(args);
    }
    if let Some(e) = &v.entrypoint {
        c.command = (!e.is_empty()).then(|| e.clone());
    }
    for k in &a.container_label_rm {
        c.labels.remove(k);
    }
    c.labels.extend(kv_map(&a.container_label_add));

    // Environment: removals by key, then additions replacing the same key in place.
    let rm: Vec<&str> = a.env_rm.iter().map(|e| env_key(e)).collect();
    c.env.retain(|e| !rm.contains(&env_key(e)));
    for add in &a.env_add {
        let add = env_value(add, lookup);
        match c.env.iter_mut().find(|e| env_key(e) == env_key(&add)) {
            Some(slot) => *slot = add,
            None => c.env.push(add),
        }
    }

    if let Some(h) = &f.hostname {
        c.hostname = h.clone();
    }
    if let Some(w) = &f.workdir {
        c.dir = w.clone();
    }
    if let Some(u) = &f.user {
        c.user = u.clone();
    }
    if let Some(s) = &f.stop_signal {
        c.stop_signal = s.clone();
    }
    if let Some(g) = v.stop_grace_period {
        c.stop_grace_period = Some(g);
    }
    if let Some(r) = f.read_only {
        c.read_only = r;
    }
    if let Some(i) = f.init {
        c.init = Some(i);
    }

    // Mounts: additions replace the mount with the same target; removals by target.
    if !a.mount_add.is_empty() || !a.mount_rm.is_empty() {
        let mut by_target: BTreeMap<String, Mount> = BTreeMap::new();
        for m in &a.mount_add {
            let m = parse_mount("--mount-add", m)?;
            if by_target.contains_key(&m.target) {
                return Err(OptsError::DuplicateMountTarget { target: m.target });
            }
            by_target.insert(m.target.clone(), m);
        }
        for m in &c.mounts {
            by_target
                .entry(m.target.clone())
                .or_insert_with(|| m.clone());
        }
        let mut mounts: Vec<Mount> = by_target
            .into_values()
            .filter(|m| !a.mount_rm.contains(&m.target))
            .collect();
        mounts.sort_by(|x, y| (&x.source, &x.target).cmp(&(&y.source, &y.target)));
        c.mounts = mounts;
    }

    // Capabilities: a dropped one leaves the added list unless also added; an added one
    // leaves the dropped list.
    if !a.cap_add.is_empty() || !a.cap_drop.is_empty() {
        let to_add: std::collections::BTreeSet<String> =
            a.cap_add.iter().map(|x| normalize_cap(x)).collect();
        let to_drop: std::collections::BTreeSet<String> =
            a.cap_drop.iter().map(|x| normalize_cap(x)).collect();
        let mut add: std::collections::BTreeSet<String> =
            c.capability_add.iter().map(|x| normalize_cap(x)).collect();
        let mut drop: std::collections::BTreeSet<String> =
            c.capability_drop.iter().map(|x| normalize_cap(x)).collect();
        for x in &to_drop {
            if !to_add.contains(x) {
                add.remove(x);
                drop.insert(x.clone());
            }
        }
        for x in &to_add {
            drop.remove(x);
            add.insert(x.clone());
        }
        c.capability_add = add.into_iter().collect();
        c.capability_drop = drop.into_iter().collect();
    }

    // Health check.
    let have_health = v.has_health_settings(f);
    if f.no_healthcheck || have_health {
        if f.no_healthcheck {
            if have_health {
                return Err(OptsError::HealthConflict);
            }
            c.healthcheck = Some(HealthConfig {
                test: vec!["NONE".into()],
                ..HealthConfig::default()
            });
        } else {
            let h = c.healthcheck.get_or_insert_with(HealthConfig::default);
            if h.test.first().is_some_and(|t| t == "NONE") {
                h.test.clear();
            }
            if let Some(x) = v.health_interval {
                h.interval = x;
            }
            if let Some(x) = v.health_timeout {
                h.timeout = x;
            }
            if let Some(x) = v.health_start_period {
                h.start_period = x;
            }
            if let Some(x) = v.health_retries {
                h.retries = x;
            }
            if let Some(cmd) = &f.health_cmd {
                h.test = if cmd.is_empty() {
                    Vec::new()
                } else {
                    vec!["CMD-SHELL".into(), cmd.clone()]
                };
            }
        }
    }

    // Resources.
    if v.any_limit() || v.any_reservation() {
        let r = tt.resources.get_or_insert_with(Default::default);
        if v.any_limit() {
            v.apply_limits(r.limits.get_or_insert_with(Default::default));
        }
        if v.any_reservation() {
            v.apply_reservations(r.reservations.get_or_insert_with(Default::default));
        }
    }

    // Restart policy.
    if v.any_restart() {
        let p = tt
            .restart_policy
            .get_or_insert_with(|| default_restart_policy(job));
        v.apply_restart(p);
    }

    // Placement.
    let placement_changes = !a.constraint_add.is_empty()
        || !a.constraint_rm.is_empty()
        || !a.placement_pref_add.is_empty()
        || !a.placement_pref_rm.is_empty()
        || v.max_per_node.is_some();
    if placement_changes {
        if v.max_per_node.is_some_and(|m| m > 0)
            && matches!(spec.mode.get(), Mode::Global | Mode::GlobalJob)
        {
            return Err(OptsError::ModeOnly {
                flag: "replicas-max-per-node",
                modes: "replicated or replicated-job",
            });
        }
        let p = tt.placement.get_or_insert_with(Default::default);
        for c in &a.constraint_add {
            check_constraint("--constraint-add", c)?;
        }
        p.constraints.extend(a.constraint_add.iter().cloned());
        p.constraints.retain(|c| !a.constraint_rm.contains(c));
        p.constraints.sort();
        let mut removed = Vec::new();
        for r in &a.placement_pref_rm {
            removed.push(parse_placement_pref("--placement-pref-rm", r)?);
        }
        p.preferences.retain(|x| {
            !removed
                .iter()
                .any(|r| r.spread.spread_descriptor == x.spread.spread_descriptor)
        });
        for add in &a.placement_pref_add {
            p.preferences
                .push(parse_placement_pref("--placement-pref-add", add)?);
        }
        if let Some(m) = v.max_per_node {
            p.max_replicas = m;
        }
    }

    if a.force {
        tt.force_update += 1;
    }

    // Update and rollback configs (from Docker's defaults when the service had none).
    if v.update.any() {
        v.update
            .apply(spec.update_config.get_or_insert_with(UpdateConfig::default));
    }
    if v.rollback.any() {
        v.rollback.apply(
            spec.rollback_config
                .get_or_insert_with(UpdateConfig::default),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The test harness's own command line: `x create …` / `x update …`.
    #[derive(Debug, Parser)]
    enum TestCli {
        Create(ServiceCreateArgs),
        Update(ServiceUpdateArgs),
    }

    fn create(args: &[&str]) -> ServiceCreateArgs {
        let mut v = vec!["x", "create"];
        v.extend_from_slice(args);
        match TestCli::try_parse_from(v).unwrap() {
            TestCli::Create(a) => a,
            TestCli::Update(_) => unreachable!(),
        }
    }

    fn update(args: &[&str]) -> ServiceUpdateArgs {
        let mut v = vec!["x", "update"];
        v.extend_from_slice(args);
        match TestCli::try_parse_from(v).unwrap() {
            TestCli::Update(a) => a,
            TestCli::Create(_) => unreachable!(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn spec_of(args: &[&str]) -> ServiceSpec {
        create_spec(&create(args), &no_env).unwrap()
    }

    fn err_of(args: &[&str]) -> String {
        create_spec(&create(args), &no_env).unwrap_err().to_string()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Ok(10_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("2µs"), Ok(2_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".into())
        );
        assert_eq!(
            parse_go_duration("soon"),
            Err("time: invalid duration \"soon\"".into())
        );
        assert_eq!(
            parse_go_duration("3d"),
            Err("time: unknown unit \"d\" in duration \"3d\"".into())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("time: invalid duration \"\"".into())
        );
        assert!(parse_go_duration("9999999h").is_err());
    }

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration_string(0), "0s");
        assert_eq!(go_duration_string(5_000_000_000), "5s");
        assert_eq!(go_duration_string(90_000_000_000), "1m30s");
        assert_eq!(go_duration_string(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration_string(500_000_000), "500ms");
        assert_eq!(go_duration_string(1_500_000_000), "1.5s");
        assert_eq!(go_duration_string(1_500), "1.5µs");
        assert_eq!(go_duration_string(42), "42ns");
    }

    #[test]
    fn go_integers() {
        assert_eq!(parse_go_uint("3"), Ok(3));
        assert_eq!(parse_go_uint("0x10"), Ok(16));
        assert_eq!(parse_go_uint("010"), Ok(8));
        assert_eq!(parse_go_uint("1_000"), Ok(1000));
        assert_eq!(
            parse_go_uint("x"),
            Err("strconv.ParseUint: parsing \"x\": invalid syntax".into())
        );
        assert_eq!(
            parse_go_uint("-1"),
            Err("strconv.ParseUint: parsing \"-1\": invalid syntax".into())
        );
        assert_eq!(
            parse_go_uint("99999999999999999999"),
            Err("strconv.ParseUint: parsing \"99999999999999999999\": value out of range".into())
        );
        assert_eq!(parse_go_int("-5"), Ok(-5));
        assert_eq!(
            parse_go_int("five"),
            Err("strconv.ParseInt: parsing \"five\": invalid syntax".into())
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_nano_cpus("1.25"), Ok(1_250_000_000));
        assert_eq!(parse_nano_cpus("1/4"), Ok(250_000_000));
        assert_eq!(parse_nano_cpus("1e-3"), Ok(1_000_000));
        assert_eq!(
            parse_nano_cpus("0.0000000001"),
            Err("value is too precise".into())
        );
        assert_eq!(
            parse_nano_cpus("lots"),
            Err("failed to parse lots as a rational number".into())
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split("sh -c 'echo hi; exit 3'").unwrap(),
            ["sh", "-c", "echo hi; exit 3"]
        );
        assert_eq!(
            shell_split(r#"a "b \"c\"" d\ e"#).unwrap(),
            ["a", "b \"c\"", "d e"]
        );
        assert_eq!(shell_split("  ").unwrap(), Vec::<String>::new());
        assert!(shell_split("'open").is_err());
    }

    #[test]
    fn create_defaults_are_sent_explicitly() {
        let s = spec_of(&["busybox", "sleep", "60"]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["Mode"],
            serde_json::json!({"Replicated": {"Replicas": 1}})
        );
        assert_eq!(
            v["TaskTemplate"]["RestartPolicy"],
            serde_json::json!({"Condition": "any", "Delay": 5_000_000_000i64, "MaxAttempts": 0, "Window": 0})
        );
        let expected_cfg = serde_json::json!({"Parallelism": 1, "Delay": 0, "FailureAction": "pause",
            "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.0, "Order": "stop-first"});
        assert_eq!(v["UpdateConfig"], expected_cfg);
        assert_eq!(v["RollbackConfig"], expected_cfg);
        assert_eq!(v["TaskTemplate"]["ContainerSpec"]["Image"], "busybox");
        assert_eq!(
            v["TaskTemplate"]["ContainerSpec"]["Args"],
            serde_json::json!(["sleep", "60"])
        );
        assert!(v["TaskTemplate"]["ContainerSpec"].get("Command").is_none());
        assert!(v["TaskTemplate"].get("Resources").is_none());
        assert!(v["TaskTemplate"].get("Placement").is_none());
        assert_eq!(v["Name"], "");
    }

    #[test]
    #[rustfmt::skip]
    fn create_from_every_kind_of_flag() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("env");
        std::fs::write(&env_file, "# comment\n\nA=file\nB=2\nFROM_CLI\nUNSET_VAR\n").unwrap();
        let env_path = env_file.to_str().unwrap();
        let lookup = |k: &str| (k == "FROM_CLI").then(|| "cli".to_owned());
        let a = create(&[
            "--name", "web", "--replicas", "3", "-e", "A=flag", "--env-file", env_path, "-l",
            "tier=front", "--container-label", "c=1", "--constraint", "node.role==worker",
            "--constraint", "node.labels.zone != b", "--placement-pref", "spread=node.labels.zone",
            "--replicas-max-per-node", "2", "--reserve-cpu", "0.25", "--reserve-memory", "64M",
            "--limit-cpu", "0.5", "--limit-memory", "1g", "--limit-pids", "100",
            "--restart-condition", "on-failure", "--restart-delay", "1s", "--restart-max-attempts",
            "3", "--restart-window", "1m", "--update-parallelism", "2", "--update-delay", "10s",
            "--update-failure-action", "rollback", "--update-monitor", "500ms",
            "--update-max-failure-ratio", "0.3", "--update-order", "start-first",
            "--rollback-parallelism", "0", "--rollback-order", "start-first", "--health-cmd",
            "test -f /ok", "--health-interval", "1s", "--health-timeout", "2s", "--health-retries",
            "4", "--health-start-period", "3s", "--stop-grace-period", "0s", "--stop-signal",
            "SIGUSR1", "-w", "/srv", "-u", "nobody", "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}", "--entrypoint", "/bin/sh -c", "--read-only",
            "--cap-add", "net_admin", "--cap-drop", "ALL", "--mount",
            "type=volume,source=v,target=/d,readonly", "--mount",
            "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770", "--mount",
            "type=bind,src=/etc,dst=/host-etc,ro=true", "busybox", "echo", "hi",
        ]);
        let s = create_spec(&a, &lookup).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.mode.get(), Mode::Replicated { replicas: 3 });
        assert_eq!(s.labels["tier"], "front");
        let c = &s.task_template.container_spec;
        // Later values replace earlier ones of the same key, at the end (docker's merge).
        assert_eq!(c.env, ["B=2", "FROM_CLI=cli", "A=flag"]);
        assert_eq!(c.labels["c"], "1");
        assert_eq!(c.command.as_deref().unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(c.args.as_deref().unwrap(), ["echo", "hi"]);
        assert_eq!(c.hostname, "{{.Service.Name}}-{{.Task.Slot}}");
        assert_eq!((c.dir.as_str(), c.user.as_str()), ("/srv", "nobody"));
        assert_eq!(c.stop_signal, "SIGUSR1");
        assert_eq!(c.stop_grace_period, Some(0));
        assert!(c.read_only);
        assert_eq!(c.capability_add, ["CAP_NET_ADMIN"]);
        assert_eq!(c.capability_drop, ["ALL"]);
        let h = c.healthcheck.as_ref().unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "test -f /ok"]);
        assert_eq!(
            (h.interval, h.timeout, h.retries, h.start_period),
            (1_000_000_000, 2_000_000_000, 4, 3_000_000_000)
        );
        assert_eq!(c.mounts.len(), 3);
        assert_eq!(
            c.mounts[0],
            Mount {
                kind: "volume".into(),
                source: "v".into(),
                target: "/d".into(),
                read_only: true,
                ..Mount::default()
            }
        );
        let t = c.mounts[1].tmpfs_options.as_ref().unwrap();
        assert_eq!((t.size_bytes, t.mode), (1 << 20, 0o1770));
        assert_eq!(c.mounts[2].kind, "bind");
        assert!(c.mounts[2].read_only);
        let r = s.task_template.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap().nano_cpus, 500_000_000);
        assert_eq!(r.limits.as_ref().unwrap().memory_bytes, 1 << 30);
        assert_eq!(r.limits.as_ref().unwrap().pids, 100);
        assert_eq!(r.reservations.as_ref().unwrap().nano_cpus, 250_000_000);
        assert_eq!(r.reservations.as_ref().unwrap().memory_bytes, 64 << 20);
        let p = s.task_template.restart_policy.as_ref().unwrap();
        assert_eq!(p.condition, "on-failure");
        assert_eq!(p.delay, Some(1_000_000_000));
        assert_eq!((p.max_attempts, p.window), (3, 60_000_000_000));
        let pl = s.task_template.placement.as_ref().unwrap();
        assert_eq!(
            pl.constraints,
            ["node.role==worker", "node.labels.zone != b"]
        );
        assert_eq!(
            pl.preferences[0].spread.spread_descriptor,
            "node.labels.zone"
        );
        assert_eq!(pl.max_replicas, 2);
        let u = s.update_config.as_ref().unwrap();
        assert_eq!(u.parallelism, 2);
        assert_eq!(u.delay, 10_000_000_000);
        assert_eq!(u.failure_action, "rollback");
        assert_eq!(u.monitor, 500_000_000);
        assert_eq!(u.max_failure_ratio, 0.3);
        assert_eq!(u.order, "start-first");
        let rb = s.rollback_config.as_ref().unwrap();
        assert_eq!((rb.parallelism, rb.order.as_str()), (0, "start-first"));
        assert_eq!(rb.failure_action, "pause");
    }

    #[test]
    fn job_modes() {
        let s = spec_of(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "busybox",
        ]);
        assert_eq!(
            s.mode.get(),
            Mode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 5
            }
        );
        assert_eq!(
            s.task_template.restart_policy.as_ref().unwrap().condition,
            "on-failure"
        );
        assert!(s.update_config.is_none() && s.rollback_config.is_none());
        let s = spec_of(&["--mode", "replicated-job", "--replicas", "3", "busybox"]);
        assert_eq!(
            s.mode.get(),
            Mode::ReplicatedJob {
                max_concurrent: 3,
                total_completions: 3
            }
        );
        let s = spec_of(&["--mode", "global-job", "busybox"]);
        assert_eq!(s.mode.get(), Mode::GlobalJob);
        let s = spec_of(&["--mode", "global", "busybox"]);
        assert_eq!(s.mode.get(), Mode::Global);
        assert!(s.update_config.is_some());
    }

    #[test]
    fn docker_validation_messages() {
        assert_eq!(
            err_of(&["--replicas", "x", "busybox"]),
            "invalid argument \"x\" for \"--replicas\" flag: strconv.ParseUint: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            err_of(&["--mode", "global", "--replicas", "2", "busybox"]),
            "replicas can only be used with replicated or replicated-job mode"
        );
        assert_eq!(
            err_of(&[
                "--mode",
                "global",
                "--replicas-max-per-node",
                "1",
                "busybox",
            ]),
            "replicas-max-per-node can only be used with replicated or replicated-job mode"
        );
        assert_eq!(
            err_of(&["--max-concurrent", "2", "busybox"]),
            "max-concurrent can only be used with replicated-job mode"
        );
        assert!(err_of(&["--mode", "sometimes", "busybox"]).starts_with("Unknown mode: sometimes"));
        assert_eq!(
            err_of(&["--restart-delay", "5", "busybox"]),
            "invalid argument \"5\" for \"--restart-delay\" flag: time: missing unit in duration \"5\""
        );
        assert_eq!(
            err_of(&["--stop-grace-period", "-1s", "busybox"]),
            "invalid argument \"-1s\" for \"--stop-grace-period\" flag: duration cannot be negative"
        );
        assert_eq!(
            err_of(&["--limit-memory", "lots", "busybox"]),
            "invalid argument \"lots\" for \"--limit-memory\" flag: invalid size: 'lots'"
        );
        assert_eq!(
            err_of(&["--limit-cpu", "half", "busybox"]),
            "invalid argument \"half\" for \"--limit-cpu\" flag: failed to parse half as a rational number"
        );
        assert_eq!(
            err_of(&["--no-healthcheck", "--health-cmd", "true", "busybox"]),
            "--no-healthcheck conflicts with --health-* options"
        );
        assert!(
            err_of(&["--update-failure-action", "explode", "busybox"])
                .starts_with("invalid argument \"explode\" for \"--update-failure-action\" flag")
        );
        assert!(
            err_of(&["--rollback-failure-action", "rollback", "busybox"]).starts_with(
                "invalid argument \"rollback\" for \"--rollback-failure-action\" flag"
            )
        );
        assert!(err_of(&["--update-order", "random", "busybox"]).contains("\"start-first\""));
        assert!(err_of(&["--restart-condition", "always", "busybox"]).contains("\"on-failure\""));
        assert!(
            err_of(&["--update-max-failure-ratio", "2", "busybox"]).contains("between 0 and 1")
        );
        assert_eq!(
            err_of(&["--mount", "type=volume,source=v", "busybox"]),
            "invalid argument \"type=volume,source=v\" for \"--mount\" flag: target is required"
        );
        assert_eq!(
            err_of(&["--mount", "type=volume,target=/d,tmpfs-size=1m", "busybox"]),
            "invalid argument \"type=volume,target=/d,tmpfs-size=1m\" for \"--mount\" flag: cannot mix 'tmpfs-*' options with mount type 'volume'"
        );
        assert!(
            err_of(&["--mount", "type=tmpfs,target=/t,tmpfs-mode=9", "busybox"])
                .ends_with("invalid value for tmpfs-mode: 9")
        );
        assert!(
            err_of(&["--mount", "target=/d,bogus", "busybox"])
                .ends_with("invalid field 'bogus' must be a key=value pair")
        );
        assert!(
            err_of(&["--mount", "type=nfs,target=/d", "busybox"])
                .contains("invalid mount type 'nfs'")
        );
        assert!(
            err_of(&["--constraint", "node.role=manager", "busybox"])
                .ends_with("constraint expected one operator from ==, !=")
        );
        assert!(
            err_of(&["--constraint", "=node==x", "busybox"]).contains("key '=node' is invalid")
        );
        assert!(
            err_of(&["--constraint", "node.role==<x>", "busybox"])
                .contains("value '<x>' is invalid")
        );
        assert!(
            err_of(&["--placement-pref", "binpack=x", "busybox"])
                .ends_with("unsupported placement preference binpack (only spread is supported)")
        );
        assert!(
            err_of(&["--placement-pref", "spread", "busybox"])
                .contains("placement preference must be of the format")
        );
        assert!(err_of(&["--entrypoint", "'sh", "busybox"]).contains("EOF found"));
        assert!(
            err_of(&["--env-file", "/nonexistent/env", "busybox"])
                .starts_with("open /nonexistent/env: ")
        );
        // Flag errors and semantic errors map to different exit codes.
        let e = create_spec(&create(&["--replicas", "x", "busybox"]), &no_env).unwrap_err();
        assert!(e.is_flag_error());
        let e = create_spec(
            &create(&["--mode", "global", "--replicas", "1", "busybox"]),
            &no_env,
        )
        .unwrap_err();
        assert!(!e.is_flag_error());
    }

    #[test]
    fn env_file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "OK=1\nBAD KEY=2\n").unwrap();
        let e = read_env_files(std::slice::from_ref(&f), &no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 2: poorly formatted environment: variable 'BAD KEY' contains whitespaces",
                f.display()
            )
        );
    }

    #[rustfmt::skip]
    fn base_spec() -> ServiceSpec {
        let mut s = spec_of(&[
            "--name", "web", "--replicas", "2", "-e", "A=1", "-e", "B=2", "-l", "x=1",
            "--constraint", "node.role==worker", "--placement-pref", "spread=node.labels.zone",
            "--mount", "type=volume,source=v,target=/d", "--cap-add", "NET_ADMIN", "--health-cmd",
            "true", "busybox:1", "sleep", "60",
        ]);
        s.task_template.force_update = 4;
        s
    }

    #[test]
    #[rustfmt::skip]
    fn update_merges_lists_like_docker() {
        let mut s = base_spec();
        let a = update(&[
            "--image", "busybox:2", "--args", "sleep 120", "--env-add", "B=3", "--env-add", "C=4",
            "--env-rm", "A", "--label-add", "y=2", "--label-rm", "x", "--container-label-add",
            "k=v", "--constraint-add", "node.labels.a==b", "--constraint-rm", "node.role==worker",
            "--placement-pref-rm", "spread=node.labels.zone", "--placement-pref-add",
            "spread=node.labels.rack", "--mount-add", "type=volume,source=w,target=/d",
            "--mount-add", "type=tmpfs,target=/t", "--cap-drop", "NET_ADMIN", "--cap-add",
            "SYS_TIME", "--replicas", "5", "--force", "--limit-memory", "32m",
            "--restart-max-attempts", "2", "--update-order", "start-first", "--rollback-monitor",
            "1s", "--read-only", "web",
        ]);
        check_update(&a).unwrap();
        apply_update(&mut s, &a, &no_env).unwrap();
        assert_eq!(s.mode.get(), Mode::Replicated { replicas: 5 });
        assert_eq!(s.labels.get("x"), None);
        assert_eq!(s.labels["y"], "2");
        let c = &s.task_template.container_spec;
        assert_eq!(c.image, "busybox:2");
        assert_eq!(c.args.as_deref().unwrap(), ["sleep", "120"]);
        assert_eq!(c.env, ["B=3", "C=4"]);
        assert_eq!(c.labels["k"], "v");
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(
            c.mounts.iter().find(|m| m.target == "/d").unwrap().source,
            "w"
        );
        assert_eq!(c.capability_add, ["CAP_SYS_TIME"]);
        assert_eq!(c.capability_drop, ["CAP_NET_ADMIN"]);
        assert!(c.read_only);
        // The health check was left alone.
        assert_eq!(c.healthcheck.as_ref().unwrap().test, ["CMD-SHELL", "true"]);
        let p = s.task_template.placement.as_ref().unwrap();
        assert_eq!(p.constraints, ["node.labels.a==b"]);
        assert_eq!(p.preferences.len(), 1);
        assert_eq!(
            p.preferences[0].spread.spread_descriptor,
            "node.labels.rack"
        );
        assert_eq!(s.task_template.force_update, 5);
        let r = s.task_template.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap().memory_bytes, 32 << 20);
        assert!(r.reservations.is_none());
        let rp = s.task_template.restart_policy.as_ref().unwrap();
        assert_eq!((rp.condition.as_str(), rp.max_attempts), ("any", 2));
        assert_eq!(s.update_config.as_ref().unwrap().order, "start-first");
        assert_eq!(s.rollback_config.as_ref().unwrap().monitor, 1_000_000_000);
    }

    #[test]
    fn update_without_flags_changes_nothing() {
        let mut s = base_spec();
        let before = s.clone();
        apply_update(&mut s, &update(&["-d", "web"]), &no_env).unwrap();
        assert_eq!(s, before);
    }

    #[test]
    fn update_health_and_modes() {
        let mut s = base_spec();
        apply_update(&mut s, &update(&["--no-healthcheck", "web"]), &no_env).unwrap();
        assert_eq!(
            s.task_template
                .container_spec
                .healthcheck
                .as_ref()
                .unwrap()
                .test,
            ["NONE"]
        );
        apply_update(&mut s, &update(&["--health-retries", "7", "web"]), &no_env).unwrap();
        let h = s.task_template.container_spec.healthcheck.as_ref().unwrap();
        assert!(h.test.is_empty());
        assert_eq!(h.retries, 7);

        let mut g = spec_of(&["--mode", "global", "busybox"]);
        let e = apply_update(&mut g, &update(&["--replicas", "2", "web"]), &no_env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "replicas can only be used with replicated or replicated-job mode"
        );
        let e =
            apply_update(&mut g, &update(&["--max-concurrent", "2", "web"]), &no_env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "max-concurrent can only be used with replicated-job mode"
        );
        let mut j = spec_of(&["--mode", "replicated-job", "busybox"]);
        apply_update(
            &mut j,
            &update(&["--replicas", "4", "--max-concurrent", "2", "web"]),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            j.mode.get(),
            Mode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 4
            }
        );
    }

    #[test]
    fn rollback_stands_alone() {
        check_update(&update(&["--rollback", "-d", "-q", "web"])).unwrap();
        let e = check_update(&update(&["--rollback", "--image", "x", "web"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "other flags may not be combined with --rollback"
        );
        let e = check_update(&update(&["--rollback", "--replicas", "2", "web"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "other flags may not be combined with --rollback"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn update_rejects_duplicate_mount_targets() {
        let mut s = base_spec();
        let a = update(&[
            "--mount-add", "type=volume,source=a,target=/x", "--mount-add",
            "type=volume,source=b,target=/x", "web",
        ]);
        assert_eq!(
            apply_update(&mut s, &a, &no_env).unwrap_err().to_string(),
            "duplicate mount target /x"
        );
    }
}
