//! Placement constraints (`node.labels.zone==a`) and platform matching, as Docker Swarm
//! reads them (SwarmKit's `manager/constraint`).
//!
//! A constraint is `key op value` with `op` one of `==` and `!=` (whitespace around the
//! parts is allowed). Keys are case-insensitive, label names after `node.labels.` /
//! `engine.labels.` are case-sensitive, and values are compared case-insensitively. A
//! label the node does not have reads as empty: `==` fails and `!=` matches.
//!
//! Parsing is stricter than SwarmKit's in one way: a key Swarm does not know (which
//! SwarmKit accepts and then never matches) and a `node.ip` value that is neither an
//! address nor a network are refused, so `service create` reports the mistake instead of
//! leaving tasks pending forever.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use shoal_store::model::{Node, Placement, PlatformSpec, Role};

/// The operators, in the order SwarmKit looks for them.
const OPERATORS: [(&str, Operator); 2] = [("==", Operator::Eq), ("!=", Operator::Ne)];

const NODE_LABEL_PREFIX: &str = "node.labels.";
const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// A constraint that could not be parsed; each names the expression as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConstraintError {
    /// Neither `==` nor `!=` in the expression (Docker's wording).
    #[error("invalid constraint \"{expr}\": constraint expected one operator from ==, !=")]
    NoOperator { expr: String },
    /// The key has characters a key cannot have (Docker's wording).
    #[error("invalid constraint \"{expr}\": key '{key}' is invalid")]
    InvalidKey { expr: String, key: String },
    /// The value is empty or has characters a value cannot have (Docker's wording).
    #[error("invalid constraint \"{expr}\": value '{value}' is invalid")]
    InvalidValue { expr: String, value: String },
    /// A well-formed key that is none of the keys Swarm knows.
    #[error("invalid constraint \"{expr}\": unknown key")]
    UnknownKey { expr: String },
    /// `node.ip` compared with something that is neither an address nor a CIDR network.
    #[error("invalid constraint \"{expr}\": '{value}' is not an IP address or network")]
    InvalidAddress { expr: String, value: String },
}

/// `==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Eq,
    Ne,
}

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// What a constraint looks at on a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// `node.id`
    NodeId,
    /// `node.hostname` (the hostname the node reports, not its name).
    NodeHostname,
    /// `node.ip`: the address the node was seen at; the value is an address or a network.
    NodeIp,
    /// `node.role`: `manager` or `worker` (the role the node runs as now).
    NodeRole,
    /// `node.platform.os`
    NodePlatformOs,
    /// `node.platform.arch` (as the node reports it, e.g. `x86_64`).
    NodePlatformArch,
    /// `node.labels.<name>`: a label an operator set on the node (`node update --label-add`).
    NodeLabel(String),
    /// `engine.labels.<name>`: a label the node's daemon was started with (`--label`).
    EngineLabel(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::NodeId => f.write_str("node.id"),
            Key::NodeHostname => f.write_str("node.hostname"),
            Key::NodeIp => f.write_str("node.ip"),
            Key::NodeRole => f.write_str("node.role"),
            Key::NodePlatformOs => f.write_str("node.platform.os"),
            Key::NodePlatformArch => f.write_str("node.platform.arch"),
            Key::NodeLabel(l) => write!(f, "{NODE_LABEL_PREFIX}{l}"),
            Key::EngineLabel(l) => write!(f, "{ENGINE_LABEL_PREFIX}{l}"),
        }
    }
}

/// One parsed placement constraint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub key: Key,
    pub op: Operator,
    /// The value as written (trimmed).
    pub value: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op.as_str(), self.value)
    }
}

/// Parses one constraint expression (`node.labels.zone == a`).
pub fn parse(s: &str) -> Result<Constraint, ConstraintError> {
    let expr = || s.to_owned();
    let Some((raw_key, raw_value, op)) = OPERATORS
        .iter()
        .find_map(|&(text, op)| s.split_once(text).map(|(k, v)| (k, v, op)))
    else {
        return Err(ConstraintError::NoOperator { expr: expr() });
    };
    let key = raw_key.trim();
    if !valid_key(key) {
        return Err(ConstraintError::InvalidKey {
            expr: expr(),
            key: key.to_owned(),
        });
    }
    let value = raw_value.trim();
    if !valid_value(value) {
        return Err(ConstraintError::InvalidValue {
            expr: expr(),
            value: value.to_owned(),
        });
    }
    let key = classify(key).ok_or_else(|| ConstraintError::UnknownKey { expr: expr() })?;
    if key == Key::NodeIp && IpMatch::parse(value).is_none() {
        return Err(ConstraintError::InvalidAddress {
            expr: expr(),
            value: value.to_owned(),
        });
    }
    Ok(Constraint {
        key,
        op,
        value: value.to_owned(),
    })
}

/// Parses a list of constraints (a service's `Placement.Constraints`); the first bad one
/// is the error.
pub fn parse_all(list: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    list.iter().map(|s| parse(s)).collect()
}

/// Whether every constraint matches the node.
pub fn matches_all(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

/// Whether a node satisfies a placement's constraints and platforms (what a global
/// service checks before it puts a task on a node). Constraints that do not parse match
/// no node.
pub fn node_matches_placement(node: &Node, placement: &Placement) -> bool {
    match parse_all(&placement.constraints) {
        Ok(cs) => matches_all(&cs, node) && platform_matches(node, &placement.platforms),
        Err(_) => false,
    }
}

impl Constraint {
    /// Whether the node satisfies this constraint.
    pub fn matches(&self, node: &Node) -> bool {
        let found = match &self.key {
            Key::NodeId => self.equals(&node.id),
            Key::NodeHostname => self.equals(&node.description.hostname),
            Key::NodeRole => self.equals(match node.role {
                Role::Manager => "manager",
                Role::Worker => "worker",
            }),
            Key::NodePlatformOs => self.equals(&node.description.platform.os),
            Key::NodePlatformArch => self.equals(&node.description.platform.architecture),
            Key::NodeLabel(l) => self.equals(node.spec.labels.get(l).map_or("", String::as_str)),
            Key::EngineLabel(l) => self.equals(
                node.description
                    .engine
                    .labels
                    .get(l)
                    .map_or("", String::as_str),
            ),
            Key::NodeIp => match (IpMatch::parse(&self.value), node_ip(&node.status.addr)) {
                (Some(m), Some(ip)) => m.contains(ip),
                // A node whose address is unknown is in no network: `==` fails, `!=`
                // matches. (An unparseable value cannot come out of `parse`.)
                _ => false,
            },
        };
        match self.op {
            Operator::Eq => found,
            Operator::Ne => !found,
        }
    }

    fn equals(&self, what: &str) -> bool {
        self.value.eq_ignore_ascii_case(what)
    }
}

/// Whether a node runs one of the platforms (empty list: any). Architectures are
/// compared by their Go names, so a node reporting `x86_64` runs `amd64` images and
/// `aarch64` runs `arm64`; OS and architecture are case-insensitive, and an empty field in
/// the list matches anything.
pub fn platform_matches(node: &Node, platforms: &[PlatformSpec]) -> bool {
    if platforms.is_empty() {
        return true;
    }
    let os = node.description.platform.os.to_ascii_lowercase();
    let arch = normalize_arch(&node.description.platform.architecture);
    platforms.iter().any(|p| {
        (p.architecture.is_empty() || normalize_arch(&p.architecture) == arch)
            && (p.os.is_empty() || p.os.eq_ignore_ascii_case(&os))
    })
}

/// An architecture's Go name (`GOARCH`), from either spelling.
fn normalize_arch(arch: &str) -> String {
    let a = arch.to_ascii_lowercase();
    match a.as_str() {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        "i386" | "i686" => "386".to_owned(),
        "armv7l" | "armv6l" | "armhf" | "armel" => "arm".to_owned(),
        _ => a,
    }
}

/// The key as a [`Key`], or None when Swarm has no such key.
fn classify(key: &str) -> Option<Key> {
    let fixed = [
        ("node.id", Key::NodeId),
        ("node.hostname", Key::NodeHostname),
        ("node.ip", Key::NodeIp),
        ("node.role", Key::NodeRole),
        ("node.platform.os", Key::NodePlatformOs),
        ("node.platform.arch", Key::NodePlatformArch),
    ];
    if let Some((_, k)) = fixed.into_iter().find(|(n, _)| key.eq_ignore_ascii_case(n)) {
        return Some(k);
    }
    if let Some(label) = label_name(key, NODE_LABEL_PREFIX) {
        return Some(Key::NodeLabel(label.to_owned()));
    }
    label_name(key, ENGINE_LABEL_PREFIX).map(|l| Key::EngineLabel(l.to_owned()))
}

/// The label name after a prefix matched case-insensitively (`node.labels.` → `zone`);
/// None without the prefix or without a name after it.
pub(crate) fn label_name<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    if key.len() > prefix.len()
        && key.is_char_boundary(prefix.len())
        && key[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&key[prefix.len()..])
    } else {
        None
    }
}

/// SwarmKit's key pattern: `^(?i)[a-z_][a-z0-9\-_.]+$`.
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && key.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// SwarmKit's value pattern: `^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$` (no
/// operator characters such as `=`, `!`, `<`, `~`).
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    ':' | '-'
                        | '_'
                        | ' '
                        | '\t'
                        | '\n'
                        | '\r'
                        | '\x0c'
                        | '.'
                        | '*'
                        | '('
                        | ')'
                        | '?'
                        | '+'
                        | '['
                        | ']'
                        | '\\'
                        | '^'
                        | '$'
                        | '|'
                        | '/'
                )
        })
}

/// The node's address from its status (`10.0.0.1` or `10.0.0.1:4242`).
fn node_ip(addr: &str) -> Option<IpAddr> {
    addr.parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// A `node.ip` value: one address or a CIDR network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpMatch {
    Addr(IpAddr),
    Net(IpAddr, u8),
}

impl IpMatch {
    fn parse(value: &str) -> Option<IpMatch> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Some(IpMatch::Addr(ip.to_canonical()));
        }
        let (addr, len) = value.split_once('/')?;
        let ip = addr.parse::<IpAddr>().ok()?;
        let len = len.parse::<u8>().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(IpMatch::Net(ip, len))
    }

    fn contains(self, ip: IpAddr) -> bool {
        match self {
            IpMatch::Addr(a) => a == ip,
            IpMatch::Net(IpAddr::V4(net), len) => match ip {
                IpAddr::V4(ip) => prefix_eq(
                    u128::from(u32::from(net)) << 96,
                    u128::from(u32::from(ip)) << 96,
                    len,
                ),
                IpAddr::V6(_) => false,
            },
            IpMatch::Net(IpAddr::V6(net), len) => match ip {
                IpAddr::V6(ip) => prefix_eq(u128::from(net), u128::from(ip), len),
                IpAddr::V4(_) => false,
            },
        }
    }
}

/// Whether the first `len` bits of two left-aligned addresses are equal.
fn prefix_eq(a: u128, b: u128, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(len));
    a & mask == b & mask
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_store::model::{NodeDescription, NodeSpec, NodeStatus, Platform};

    use super::*;

    fn node() -> Node {
        Node {
            id: "node1abc".into(),
            spec: NodeSpec {
                labels: BTreeMap::from([
                    ("zone".to_owned(), "Eu-West".to_owned()),
                    ("Disk".to_owned(), "ssd".to_owned()),
                ]),
                ..Default::default()
            },
            description: NodeDescription {
                hostname: "Edge-1".into(),
                platform: Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                },
                engine: shoal_store::model::Engine {
                    labels: BTreeMap::from([("gpu".to_owned(), "yes".to_owned())]),
                    ..Default::default()
                },
                ..Default::default()
            },
            status: NodeStatus {
                addr: "10.1.2.3:4242".into(),
                ..Default::default()
            },
            role: Role::Manager,
            ..Default::default()
        }
    }

    fn m(expr: &str) -> bool {
        parse(expr).unwrap().matches(&node())
    }

    #[test]
    fn parses_keys_operators_and_whitespace() {
        assert_eq!(
            parse(" node.labels.zone  ==  eu-west ").unwrap(),
            Constraint {
                key: Key::NodeLabel("zone".into()),
                op: Operator::Eq,
                value: "eu-west".into()
            }
        );
        assert_eq!(
            parse("Node.Role!=worker").unwrap(),
            Constraint {
                key: Key::NodeRole,
                op: Operator::Ne,
                value: "worker".into()
            }
        );
        assert_eq!(
            parse("ENGINE.LABELS.Gpu==yes").unwrap().key,
            Key::EngineLabel("Gpu".into())
        );
        assert_eq!(
            parse("node.platform.arch == x86_64").unwrap().to_string(),
            "node.platform.arch==x86_64"
        );
        assert_eq!(
            parse_all(&["node.id==a".into(), "node.hostname!=b".into()])
                .unwrap()
                .iter()
                .map(|c| c.key.clone())
                .collect::<Vec<_>>(),
            vec![Key::NodeId, Key::NodeHostname]
        );
        assert_eq!(parse_all(&[]).unwrap(), vec![]);
    }

    #[test]
    fn errors_name_the_expression() {
        assert_eq!(
            parse("node.foo==x").unwrap_err().to_string(),
            "invalid constraint \"node.foo==x\": unknown key"
        );
        assert_eq!(
            parse("node.labels.==x").unwrap_err().to_string(),
            "invalid constraint \"node.labels.==x\": unknown key"
        );
        assert_eq!(
            parse("node.role=manager").unwrap_err().to_string(),
            "invalid constraint \"node.role=manager\": constraint expected one operator from ==, !="
        );
        assert_eq!(
            parse("").unwrap_err(),
            ConstraintError::NoOperator {
                expr: String::new()
            }
        );
        assert_eq!(
            parse("node role==manager").unwrap_err().to_string(),
            "invalid constraint \"node role==manager\": key 'node role' is invalid"
        );
        assert_eq!(
            parse("1node==x").unwrap_err(),
            ConstraintError::InvalidKey {
                expr: "1node==x".into(),
                key: "1node".into()
            }
        );
        assert_eq!(
            parse("node.role==").unwrap_err().to_string(),
            "invalid constraint \"node.role==\": value '' is invalid"
        );
        assert_eq!(
            parse("node.labels.a==b==c").unwrap_err(),
            ConstraintError::InvalidValue {
                expr: "node.labels.a==b==c".into(),
                value: "b==c".into()
            }
        );
        assert_eq!(
            parse("node.ip==not-an-ip").unwrap_err().to_string(),
            "invalid constraint \"node.ip==not-an-ip\": 'not-an-ip' is not an IP address or network"
        );
        assert_eq!(
            parse_all(&["node.role==manager".into(), "bad".into()]).unwrap_err(),
            ConstraintError::NoOperator { expr: "bad".into() }
        );
    }

    #[test]
    fn values_allow_swarms_special_characters() {
        for ok in [
            "node.labels.a==x y",
            "node.labels.a==a:b/c",
            "node.labels.a==v1.2_3-4*",
            "node.labels.a==(x|y)?[z]+^$\\",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "node.labels.a==x,y",
            "node.labels.a==é",
            "node.labels.a==x@y",
        ] {
            assert!(
                matches!(parse(bad), Err(ConstraintError::InvalidValue { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn node_fields_match_case_insensitively() {
        assert!(m("node.id==node1abc"));
        assert!(m("node.id==NODE1ABC"));
        assert!(!m("node.id!=node1abc"));
        assert!(m("node.hostname==edge-1"));
        assert!(!m("node.hostname==edge-2"));
        assert!(m("node.hostname!=edge-2"));
        assert!(m("node.role==manager"));
        assert!(m("node.role==MANAGER"));
        assert!(!m("node.role==worker"));
        assert!(m("node.role!=worker"));
        assert!(m("node.platform.os==Linux"));
        assert!(m("node.platform.arch==x86_64"));
        // Constraints compare what the node reports: no amd64 aliasing (as in Swarm).
        assert!(!m("node.platform.arch==amd64"));
    }

    #[test]
    fn labels_names_are_case_sensitive_values_are_not() {
        assert!(m("node.labels.zone==eu-west"));
        assert!(m("node.labels.zone==EU-WEST"));
        assert!(!m("node.labels.zone!=eu-west"));
        assert!(m("node.labels.Disk==ssd"));
        // `disk` is not `Disk`: a missing label reads as empty.
        assert!(!m("node.labels.disk==ssd"));
        assert!(m("node.labels.disk!=ssd"));
        assert!(m("engine.labels.gpu==yes"));
        assert!(!m("engine.labels.gpu!=yes"));
        assert!(!m("engine.labels.missing==yes"));
        assert!(m("engine.labels.missing!=yes"));
        // Node labels are not engine labels.
        assert!(!m("engine.labels.zone==eu-west"));
        assert!(!m("node.labels.gpu==yes"));
    }

    #[test]
    fn node_ip_matches_addresses_and_networks() {
        assert!(m("node.ip==10.1.2.3"));
        assert!(!m("node.ip!=10.1.2.3"));
        assert!(m("node.ip==10.1.0.0/16"));
        assert!(m("node.ip!=10.2.0.0/16"));
        assert!(m("node.ip==0.0.0.0/0"));
        assert!(!m("node.ip==fd00::/8"));
        let mut n = node();
        n.status.addr = "fd00::5".into();
        assert!(parse("node.ip==fd00::/8").unwrap().matches(&n));
        assert!(!parse("node.ip==fd00::6").unwrap().matches(&n));
        n.status.addr = String::new();
        assert!(!parse("node.ip==10.1.2.3").unwrap().matches(&n));
        assert!(parse("node.ip!=10.1.2.3").unwrap().matches(&n));
        assert!(parse("node.ip==10.0.0.0/33").is_err());
    }

    #[test]
    fn platforms_alias_architectures() {
        let n = node();
        let p = |arch: &str, os: &str| PlatformSpec {
            architecture: arch.into(),
            os: os.into(),
        };
        assert!(platform_matches(&n, &[]));
        assert!(platform_matches(&n, &[p("amd64", "linux")]));
        assert!(platform_matches(&n, &[p("x86_64", "Linux")]));
        assert!(platform_matches(&n, &[p("", "linux")]));
        assert!(platform_matches(&n, &[p("amd64", "")]));
        assert!(platform_matches(
            &n,
            &[p("arm64", "linux"), p("amd64", "linux")]
        ));
        assert!(!platform_matches(&n, &[p("arm64", "linux")]));
        assert!(!platform_matches(&n, &[p("amd64", "windows")]));
        let mut arm = node();
        arm.description.platform.architecture = "aarch64".into();
        assert!(platform_matches(&arm, &[p("arm64", "linux")]));
        assert!(!platform_matches(&arm, &[p("amd64", "linux")]));
        arm.description.platform.architecture = "armv7l".into();
        assert!(platform_matches(&arm, &[p("arm", "linux")]));
    }

    #[test]
    fn placement_checks_constraints_and_platforms() {
        let n = node();
        let mut p = Placement {
            constraints: vec!["node.role==manager".into()],
            ..Default::default()
        };
        assert!(node_matches_placement(&n, &p));
        p.platforms = vec![PlatformSpec {
            architecture: "arm64".into(),
            os: "linux".into(),
        }];
        assert!(!node_matches_placement(&n, &p));
        p.platforms.clear();
        p.constraints.push("node.labels.zone==us".into());
        assert!(!node_matches_placement(&n, &p));
        p.constraints = vec!["garbage".into()];
        assert!(!node_matches_placement(&n, &p));
        assert!(node_matches_placement(&n, &Placement::default()));
    }
}
