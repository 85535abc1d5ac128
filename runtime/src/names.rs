//! Docker-style random container names (`adjective_surname`), for containers created
//! without `--name`.

const LEFT: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "blissful",
    "bold",
    "brave",
    "busy",
    "calm",
    "clever",
    "cool",
    "dazzling",
    "determined",
    "eager",
    "ecstatic",
    "elegant",
    "epic",
    "fervent",
    "focused",
    "friendly",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "nervous",
    "nifty",
    "nostalgic",
    "optimistic",
    "peaceful",
    "practical",
    "priceless",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "silly",
    "stoic",
    "sweet",
    "tender",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "wizardly",
    "youthful",
    "zealous",
];

const RIGHT: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bell",
    "boole",
    "borg",
    "bose",
    "cannon",
    "carson",
    "cerf",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "euler",
    "fermat",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "hamilton",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lamport",
    "liskov",
    "lovelace",
    "mayer",
    "mccarthy",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "pike",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "turing",
    "wozniak",
    "yalow",
];

/// A random name; `retry` > 0 appends a digit, as Docker does after a collision.
pub fn random(retry: u32) -> String {
    let mut b = [0u8; 4];
    // getrandom only fails without any entropy source, which a booted Linux always has;
    // the name would then be the first pair, still valid.
    let _ = getrandom::fill(&mut b);
    let l = LEFT[(u16::from_le_bytes([b[0], b[1]]) as usize) % LEFT.len()];
    let r = RIGHT[(u16::from_le_bytes([b[2], b[3]]) as usize) % RIGHT.len()];
    if retry > 0 {
        format!("{l}_{r}{}", b[0] % 10)
    } else {
        format!("{l}_{r}")
    }
}

/// A new random 64-hex-digit ID.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Whether `name` is a valid container name (Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = random(0);
        assert!(valid(&n), "{n}");
        assert!(n.contains('_'));
        assert!(valid("web-1.a_b"));
        assert!(!valid("-web"));
        assert!(!valid("a"));
        assert!(!valid("a b"));
        assert_eq!(new_id().len(), 64);
        assert_ne!(new_id(), new_id());
    }
}
