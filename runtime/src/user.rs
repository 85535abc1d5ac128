//! Docker's `--user` resolution against an image's `/etc/passwd` and `/etc/group`.
//!
//! Follows `github.com/moby/sys/user` `GetExecUser` (what runc and Docker's
//! `daemon/oci_linux.go` `getUser` use), with Docker's defaults (uid 0, gid 0):
//!
//! - `""` means the passwd entry with uid 0 (or 0:0 if there is none);
//! - `user` is a name or a number; a number is always a uid, and need not be in passwd
//!   (then gid 0); a name must be in passwd;
//! - `user:group`: group is a name (must be in /etc/group) or a number (need not be);
//!   an explicit group replaces the passwd gid and disables supplementary groups;
//! - supplementary groups: without an explicit group, the groups whose member list names
//!   the matched passwd user, in file order;
//! - the first matching entry wins; a missing file behaves like an empty one.
//!
//! Differences from `moby/sys/user`: lines with fewer than 4 (passwd) or 3 (group)
//! fields, a non-numeric id, or a leading `#` are skipped (Go reads a bad number as 0),
//! and a missing or empty home directory is `/`.

/// The process identity for a container, ready for the OCI spec's `process.user`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The spec's `additionalGids`: the primary gid first, then the supplementary groups,
    /// as Docker builds it (the primary gid is repeated there since the fix for
    /// CVE-2023-25173, so that `setgroups` never keeps the runtime's own groups).
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, `/` if unknown (for `HOME`).
    pub home: String,
}

/// Errors from user resolution; messages match runc's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// A user name not found in /etc/passwd.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name as given.
        name: String,
    },
    /// A group name not found in /etc/group.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name as given.
        name: String,
    },
    /// A numeric uid or gid outside 0..=2147483647.
    #[error("uids and gids must be in range 0-2147483647, got {id}")]
    OutOfRange {
        /// The number as given.
        id: i64,
    },
}

/// Highest uid/gid Docker accepts (`1<<31 - 1`).
const MAX_ID: i64 = (1 << 31) - 1;

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines worth parsing: trimmed, not empty, not comments.
fn lines(text: Option<&str>) -> impl Iterator<Item = &str> {
    text.unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `name:password:uid:gid:gecos:home:shell`
fn passwd_entries(passwd: Option<&str>) -> impl Iterator<Item = PasswdEntry<'_>> {
    lines(passwd).filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields.get(5).copied().unwrap_or(""),
        })
    })
}

/// `name:password:gid:member,member`
fn group_entries(group: Option<&str>) -> impl Iterator<Item = GroupEntry<'_>> {
    lines(group).filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 {
            return None;
        }
        let members = match fields.get(3) {
            Some(list) if !list.is_empty() => list.split(',').collect(),
            _ => Vec::new(),
        };
        Some(GroupEntry {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members,
        })
    })
}

/// A number as Go's `strconv.Atoi` reads it (optional sign, decimal digits), or `None`
/// if the text is a name.
fn numeric(text: &str) -> Option<i64> {
    text.parse().ok()
}

fn in_range(id: i64) -> Result<u32, UserError> {
    if (0..=MAX_ID).contains(&id) {
        // In 0..=2^31-1, so it fits in u32.
        Ok(id as u32)
    } else {
        Err(UserError::OutOfRange { id })
    }
}

/// Resolves a Docker `--user` value (`""`, `user`, `uid`, `user:group`, `uid:gid`, …)
/// against the image's `/etc/passwd` and `/etc/group` contents (`None` = file absent).
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or("");
    let group_arg = parts.next().unwrap_or("");
    let uid_num = numeric(user_arg);
    let gid_num = numeric(group_arg);

    let mut uid: u32 = 0;
    let mut gid: u32 = 0;
    let mut home = String::new();

    let matched = passwd_entries(passwd).find(|u| match (user_arg, uid_num) {
        ("", _) => u.uid == 0,
        (_, Some(n)) => i64::from(u.uid) == n,
        (name, None) => u.name == name,
    });
    let matched_name = match &matched {
        Some(entry) => {
            uid = entry.uid;
            gid = entry.gid;
            home = entry.home.to_string();
            Some(entry.name)
        }
        None if user_arg.is_empty() => None,
        None => match uid_num {
            Some(n) => {
                uid = in_range(n)?;
                None
            }
            None => {
                return Err(UserError::UnknownUser {
                    name: user_arg.to_string(),
                });
            }
        },
    };

    let mut supplementary = Vec::new();
    if !group_arg.is_empty() {
        let found = group_entries(group).find(|g| match gid_num {
            Some(n) => i64::from(g.gid) == n,
            None => g.name == group_arg,
        });
        gid = match (found, gid_num) {
            (Some(entry), _) => entry.gid,
            (None, Some(n)) => in_range(n)?,
            (None, None) => {
                return Err(UserError::UnknownGroup {
                    name: group_arg.to_string(),
                });
            }
        };
    } else if let Some(name) = matched_name {
        supplementary = group_entries(group)
            .filter(|g| g.members.contains(&name))
            .map(|g| g.gid)
            .collect();
    }

    let mut additional_gids = vec![gid];
    additional_gids.extend(supplementary);
    if home.is_empty() {
        home = "/".to_string();
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment:x:5:5::/nope:/bin/sh
broken line without colons
bad:x:notanumber:7:bad:/bad:/bin/sh
short:x:9
app:x:1000:1000:App User:/home/app:/bin/sh
nohome:x:1001:1001
  spaced:x:1002:1002::/home/spaced:/bin/sh  

dup:x:1000:5:second entry for uid 1000:/home/dup:/bin/sh
";

    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
app:x:1000:
audio:x:29:app,spaced
video:x:44:spaced,app
broken
bad:x:nan:app
staff:x:50:daemon
";

    fn user(uid: u32, gid: u32, additional: &[u32], home: &str) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: additional.to_vec(),
            home: home.to_string(),
        }
    }

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_spec_is_root_with_roots_groups() {
        assert_eq!(r("").unwrap(), user(0, 0, &[0, 10], "/root"));
    }

    #[test]
    fn empty_spec_without_files_is_root_at_slash() {
        assert_eq!(resolve("", None, None).unwrap(), user(0, 0, &[0], "/"));
        assert_eq!(
            resolve("", Some(""), Some("")).unwrap(),
            user(0, 0, &[0], "/")
        );
    }

    #[test]
    fn name_resolves_uid_gid_home_and_supplementary_groups() {
        assert_eq!(
            r("app").unwrap(),
            user(1000, 1000, &[1000, 10, 29, 44], "/home/app")
        );
        assert_eq!(r("daemon").unwrap(), user(1, 1, &[1, 50], "/usr/sbin"));
    }

    #[test]
    fn numeric_uid_in_passwd_uses_the_first_entry() {
        assert_eq!(
            r("1000").unwrap(),
            user(1000, 1000, &[1000, 10, 29, 44], "/home/app")
        );
        assert_eq!(r("0").unwrap(), user(0, 0, &[0, 10], "/root"));
    }

    #[test]
    fn numeric_uid_not_in_passwd_is_fine() {
        assert_eq!(r("4242").unwrap(), user(4242, 0, &[0], "/"));
        assert_eq!(
            resolve("4242", None, None).unwrap(),
            user(4242, 0, &[0], "/")
        );
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = r("nobody").unwrap_err();
        assert_eq!(
            err,
            UserError::UnknownUser {
                name: "nobody".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            resolve("app", None, None).unwrap_err(),
            UserError::UnknownUser { name: "app".into() }
        );
    }

    #[test]
    fn explicit_group_by_name_or_number_drops_supplementary_groups() {
        assert_eq!(r("app:audio").unwrap(), user(1000, 29, &[29], "/home/app"));
        assert_eq!(r("app:44").unwrap(), user(1000, 44, &[44], "/home/app"));
        assert_eq!(r("app:777").unwrap(), user(1000, 777, &[777], "/home/app"));
        assert_eq!(
            r("1000:1000").unwrap(),
            user(1000, 1000, &[1000], "/home/app")
        );
        assert_eq!(r("4242:4343").unwrap(), user(4242, 4343, &[4343], "/"));
        assert_eq!(
            resolve("4242:4343", None, None).unwrap(),
            user(4242, 4343, &[4343], "/")
        );
        assert_eq!(r(":wheel").unwrap(), user(0, 10, &[10], "/root"));
        // An empty group part is no group.
        assert_eq!(r("app:").unwrap(), r("app").unwrap());
        // Extra colon-separated parts are ignored.
        assert_eq!(
            r("app:audio:whatever").unwrap(),
            user(1000, 29, &[29], "/home/app")
        );
    }

    #[test]
    fn unknown_group_name_is_an_error() {
        let err = r("app:nogroup").unwrap_err();
        assert_eq!(
            err,
            UserError::UnknownGroup {
                name: "nogroup".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert_eq!(
            resolve("4242:staff", None, None).unwrap_err(),
            UserError::UnknownGroup {
                name: "staff".into()
            }
        );
        assert_eq!(
            resolve("4242:staff", None, Some(GROUP)).unwrap(),
            user(4242, 50, &[50], "/")
        );
    }

    #[test]
    fn ids_out_of_range_are_errors() {
        assert_eq!(r("-1").unwrap_err(), UserError::OutOfRange { id: -1 });
        assert_eq!(
            r("2147483648").unwrap_err(),
            UserError::OutOfRange { id: 2147483648 }
        );
        assert_eq!(r("2147483647").unwrap(), user(2147483647, 0, &[0], "/"));
        assert_eq!(r("app:-5").unwrap_err(), UserError::OutOfRange { id: -5 });
        // Too big for a number at all: Go's Atoi fails too, so it is a name.
        assert_eq!(
            r("99999999999999999999").unwrap_err(),
            UserError::UnknownUser {
                name: "99999999999999999999".into()
            }
        );
    }

    #[test]
    fn malformed_and_comment_lines_are_skipped() {
        assert!(matches!(r("bad"), Err(UserError::UnknownUser { .. })));
        assert!(matches!(r("short"), Err(UserError::UnknownUser { .. })));
        assert!(matches!(
            r("broken line without colons"),
            Err(UserError::UnknownUser { .. })
        ));
        assert!(matches!(
            r("# a comment"),
            Err(UserError::UnknownUser { .. })
        ));
        // Surrounding whitespace is trimmed; entries without a home get "/".
        assert_eq!(
            r("spaced").unwrap(),
            user(1002, 1002, &[1002, 29, 44], "/home/spaced")
        );
        assert_eq!(r("nohome").unwrap(), user(1001, 1001, &[1001], "/"));
        // A malformed group line does not hide the valid ones.
        assert!(matches!(r("app:bad"), Err(UserError::UnknownGroup { .. })));
    }

    #[test]
    fn name_match_uses_the_first_entry_and_its_name_for_groups() {
        // "dup" shares uid 1000 with "app"; by name it is its own entry.
        assert_eq!(r("dup").unwrap(), user(1000, 5, &[5], "/home/dup"));
    }
}
