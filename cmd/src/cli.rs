//! Command-line definitions (clap). Verbs, flags and defaults follow the docker CLI.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// shoal: a Docker-Swarm-class cluster in one static binary.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// Daemon socket to connect to (unix:///path), like DOCKER_HOST.
    #[arg(
        short = 'H',
        long = "host",
        env = "SHOAL_HOST",
        global = true,
        value_name = "HOST"
    )]
    pub host: Option<String>,

    /// Enable debug output.
    #[arg(short = 'D', long = "debug", global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the shoal daemon.
    Daemon(DaemonArgs),
    /// Show the shoal version information.
    Version(FormatArgs),
    /// Display system-wide information.
    Info(FormatArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Manage the swarm.
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage swarm nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage swarm services.
    #[command(subcommand)]
    Service(crate::commands::service::ServiceCmd),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),

    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container.
    Create(RunArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// List containers.
    Ps(PsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Return low-level information on shoal objects.
    Inspect(InspectArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(StatsArgs),
    /// List images.
    Images(ImagesArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Remove one or more images.
    Rmi(ImageRmArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(NamesArgs),
    /// Pause all processes within one or more containers.
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers.
    Unpause(NamesArgs),

    /// Internal: the per-container helper process.
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Internal: the exec helper process.
    #[command(hide = true, name = "shim-exec")]
    ShimExec(ShimExecArgs),
}

/// `--format` for single-object commands.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Format output using a custom template ('json' or a Go template).
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Root directory of persistent state.
    #[arg(long, default_value = "/var/lib/shoal", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Root directory of runtime state (sockets, helper state, namespaces).
    #[arg(long, default_value = "/run/shoal", value_name = "DIR")]
    pub run_dir: PathBuf,
    /// API socket path (default: <run-dir>/shoal.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Registry reachable over plain HTTP (host[:port]); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Directory of per-registry CA certificates (<dir>/<host[:port]>/*.crt).
    #[arg(long, default_value = "/etc/shoal/certs.d", value_name = "DIR")]
    pub registry_certs_dir: PathBuf,
    /// Maximum size of a container log file before rotation.
    #[arg(long, default_value = "10m", value_name = "SIZE")]
    pub log_max_size: String,
    /// Number of container log files kept (rotated ones included).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub log_max_files: u32,
    /// Cgroup parent of containers (default: shoal, or shoal-<hash> for a non-default data dir).
    #[arg(long, value_name = "NAME")]
    pub cgroup_parent: Option<String>,
    /// Log level of the daemon (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Set key=value labels on this node's engine (shown by `info`, reported to the swarm
    /// as the node's engine labels); repeatable.
    #[arg(long = "label", value_name = "K=V")]
    pub label: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container.
    Create(RunArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// List containers.
    #[command(visible_aliases = ["ps", "list"])]
    Ls(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Display detailed information on one or more containers.
    Inspect(InspectArgs),
    /// Display container resource usage statistics.
    Stats(StatsArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(NamesArgs),
    /// Pause all processes within one or more containers.
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers.
    Unpause(NamesArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Load images from a docker-save or OCI archive (file or '-' for stdin).
    #[command(visible_alias = "load")]
    Import(ImportArgs),
    /// Write images to an OCI archive (also loadable by docker load).
    #[command(visible_alias = "save")]
    Export(ExportArgs),
    /// List images.
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images.
    Inspect(InspectArgs),
    /// Remove one or more images.
    #[command(visible_alias = "remove")]
    Rm(ImageRmArgs),
    /// Remove unused images.
    Prune(ImagePruneArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume.
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls(VolumeLsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes.
    #[command(visible_alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused volumes.
    Prune(VolumePruneArgs),
}

#[derive(Debug, Subcommand)]
pub enum SwarmCmd {
    /// Initialize a swarm.
    Init(SwarmInitArgs),
    /// Join a swarm as a node and/or manager.
    Join(SwarmJoinArgs),
    /// Manage join tokens.
    #[command(name = "join-token")]
    JoinToken(JoinTokenArgs),
    /// Leave the swarm.
    Leave(SwarmLeaveArgs),
    /// Update the swarm.
    Update(SwarmUpdateArgs),
    /// Unlock swarm.
    Unlock,
    /// Manage the unlock key.
    #[command(name = "unlock-key")]
    UnlockKey(UnlockKeyArgs),
    /// Display and rotate the root CA.
    Ca(SwarmCaArgs),
}

#[derive(Debug, Args)]
pub struct SwarmInitArgs {
    /// Advertised address (format: <ip|interface>[:port]).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Listen address (format: <ip|interface>[:port]).
    #[arg(long, default_value = "0.0.0.0:4242")]
    pub listen_addr: String,
    /// Default address pool in CIDR format.
    #[arg(long = "default-addr-pool")]
    pub default_addr_pool: Vec<String>,
    /// Default address pool subnet mask length.
    #[arg(long = "default-addr-pool-mask-length", default_value_t = 24)]
    pub default_addr_pool_mask_length: u32,
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long, default_value = "2160h")]
    pub cert_expiry: String,
    /// Task history retention limit.
    #[arg(long, default_value_t = 5)]
    pub task_history_limit: i64,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
    #[arg(long, default_value = "5s")]
    pub dispatcher_heartbeat: String,
    /// Number of log entries between Raft snapshots.
    #[arg(long, default_value_t = 10000)]
    pub snapshot_interval: u64,
    /// Number of additional Raft snapshots to retain.
    #[arg(long, default_value_t = 0)]
    pub max_snapshots: u64,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager).
    #[arg(long)]
    pub autolock: bool,
    /// Force create a new cluster from current state.
    #[arg(long)]
    pub force_new_cluster: bool,
}

#[derive(Debug, Args)]
pub struct SwarmJoinArgs {
    /// Token for entry into the swarm.
    #[arg(long)]
    pub token: String,
    /// Advertised address (format: <ip|interface>[:port]).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Listen address (format: <ip|interface>[:port]).
    #[arg(long, default_value = "0.0.0.0:4242")]
    pub listen_addr: String,
    /// A manager's address (HOST:PORT).
    pub remote: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Only display token.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Rotate join token.
    #[arg(long)]
    pub rotate: bool,
    /// worker or manager.
    pub role: String,
}

#[derive(Debug, Args)]
pub struct SwarmLeaveArgs {
    /// Force this node to leave the swarm, ignoring warnings.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SwarmUpdateArgs {
    /// Change manager autolocking setting (true|false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub autolock: Option<bool>,
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long)]
    pub cert_expiry: Option<String>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
    #[arg(long)]
    pub dispatcher_heartbeat: Option<String>,
    /// Task history retention limit.
    #[arg(long)]
    pub task_history_limit: Option<i64>,
    /// Number of log entries between Raft snapshots.
    #[arg(long)]
    pub snapshot_interval: Option<u64>,
    /// Number of additional Raft snapshots to retain.
    #[arg(long)]
    pub max_snapshots: Option<u64>,
}

#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Only display the unlock key.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Rotate the unlock key.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Args)]
pub struct SwarmCaArgs {
    /// Rotate the swarm CA.
    #[arg(long)]
    pub rotate: bool,
    /// Only print the CA certificate.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Exit immediately instead of waiting for the root rotation to converge.
    #[arg(short = 'd', long)]
    pub detach: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes in the swarm.
    #[command(visible_alias = "list")]
    Ls(NodeLsArgs),
    /// Display detailed information on one or more nodes.
    Inspect(NodeInspectArgs),
    /// Update a node.
    Update(NodeUpdateArgs),
    /// Promote one or more nodes to manager in the swarm.
    Promote(NodesArgs),
    /// Demote one or more nodes from manager in the swarm.
    Demote(NodesArgs),
    /// Remove one or more nodes from the swarm.
    #[command(visible_alias = "remove")]
    Rm(NodeRmArgs),
    /// List tasks running on one or more nodes, defaults to current node.
    Ps(crate::commands::service::NodePsArgs),
}

#[derive(Debug, Args)]
pub struct NodeLsArgs {
    /// Only display IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output based on conditions provided (id=, name=, role=, membership=).
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeInspectArgs {
    /// Print the information in a human friendly format.
    #[arg(long)]
    pub pretty: bool,
    /// Format output using a custom template.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    /// Availability of the node ("active", "pause", "drain").
    #[arg(long)]
    pub availability: Option<String>,
    /// Add or update a node label (key=value).
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a node label if exists.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Role of the node ("worker", "manager").
    #[arg(long)]
    pub role: Option<String>,
    pub node: String,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeRmArgs {
    /// Force remove a node from the swarm.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

/// Flags of `run` and `create`.
#[derive(Debug, Args, Clone)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run container in background and print container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Set metadata on a container.
    #[arg(short = 'l', long = "label", value_name = "K=V")]
    pub label: Vec<String>,
    /// Bind mount a volume (NAME:/path[:ro] or /host:/path[:ro]).
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub volume: Vec<String>,
    /// Mount a tmpfs directory (/path[:options]).
    #[arg(long = "tmpfs", value_name = "SPEC")]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 32m).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Add Linux capabilities.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long, allow_hyphen_values = true)]
    pub stop_timeout: Option<i64>,
    /// Command to run to check health.
    #[arg(long = "health-cmd", value_name = "string")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s).
    #[arg(
        long = "health-interval",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_interval: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(
        long = "health-retries",
        value_name = "int",
        allow_hyphen_values = true
    )]
    pub health_retries: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown
    /// (ms|s|m|h) (default 0s).
    #[arg(
        long = "health-start-period",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h) (default 0s).
    #[arg(
        long = "health-start-interval",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_start_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s).
    #[arg(
        long = "health-timeout",
        value_name = "duration",
        allow_hyphen_values = true
    )]
    pub health_timeout: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Connect a container to a network (none or host).
    #[arg(long, alias = "net", default_value = "none")]
    pub network: String,
    /// Suppress the pull output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The image, then the command and its arguments.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "IMAGE [COMMAND] [ARG...]")]
    pub image_and_command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short = 'a', long)]
    pub attach: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long, allow_hyphen_values = true)]
    pub last: Option<i64>,
    /// Show the latest created container (includes all states).
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Filter output based on conditions provided (status=, name=, id=, label=, ancestor=).
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative time.
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        allow_hyphen_values = true
    )]
    pub time: Option<i64>,
    /// Signal to send to the container.
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct ExecArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Set environment variables.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Detached mode: run command in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The container, then the command and its arguments.
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "CONTAINER COMMAND [ARG...]")]
    pub container_and_command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Return JSON for specified type (container, image, volume).
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Suppress verbose output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub image: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Read from a file instead of the positional argument.
    #[arg(short = 'i', long = "input")]
    pub input: Option<String>,
    /// Name the imported image (overrides the archive's names).
    #[arg(short = 't', long)]
    pub tag: Option<String>,
    /// Suppress the load output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The archive ('-' for stdin).
    pub file: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long)]
    pub format: Option<String>,
    /// Filter by repository[:tag].
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Force removal of the image.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Set metadata for a volume.
    #[arg(long = "label", value_name = "K=V")]
    pub label: Vec<String>,
    /// Volume driver name (only "local").
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    #[arg(long = "name")]
    pub name_flag: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct VolumeLsArgs {
    /// Only display volume names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// Force the removal of one or more volumes.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry (default: docker.io).
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShimArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub state_root: PathBuf,
    #[arg(long)]
    pub log_max_size: u64,
    #[arg(long)]
    pub log_max_files: u32,
}

#[derive(Debug, Args)]
pub struct ShimExecArgs {
    #[arg(long)]
    pub state_root: PathBuf,
    #[arg(long)]
    pub id: String,
    /// The OCI process file to run.
    #[arg(long)]
    pub process: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn run_stops_parsing_at_the_image() {
        let c = parse(&[
            "shoal", "run", "--rm", "-e", "A=1", "busybox", "ls", "-l", "--rm",
        ]);
        let Command::Run(r) = c.command else { panic!() };
        assert!(r.rm);
        assert_eq!(r.env, ["A=1"]);
        assert_eq!(r.image_and_command, ["busybox", "ls", "-l", "--rm"]);
    }

    #[test]
    fn run_hostname_short_flag() {
        let c = parse(&["shoal", "container", "run", "-h", "box", "-d", "busybox"]);
        let Command::Container(ContainerCmd::Run(r)) = c.command else {
            panic!()
        };
        assert_eq!(r.hostname.as_deref(), Some("box"));
        assert!(r.detach);
    }

    #[test]
    fn exec_takes_the_rest() {
        let c = parse(&["shoal", "exec", "-e", "X=1", "web", "sh", "-c", "exit 3"]);
        let Command::Exec(e) = c.command else {
            panic!()
        };
        assert_eq!(e.container_and_command, ["web", "sh", "-c", "exit 3"]);
    }

    #[test]
    fn aliases() {
        assert!(matches!(
            parse(&["shoal", "container", "ps", "-a"]).command,
            Command::Container(ContainerCmd::Ls(_))
        ));
        assert!(matches!(
            parse(&["shoal", "image", "load", "x.tar"]).command,
            Command::Image(ImageCmd::Import(_))
        ));
        assert!(matches!(
            parse(&["shoal", "image", "list"]).command,
            Command::Image(ImageCmd::Ls(_))
        ));
    }
}
