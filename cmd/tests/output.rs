//! Docker-shaped output of the CLI, end to end: node-runtime issue, requirement 3 (table
//! headers and alignment, `-q`, `--format json|template|table`, `--no-trunc`, `inspect`
//! shapes and `-f`, error wording).

mod common_cli;

use std::collections::BTreeSet;

use common_cli::*;
use serde_json::Value;
use shoal_testkit::daemon::Daemon;

const PS_HEADERS: [&str; 7] = [
    "CONTAINER ID",
    "IMAGE",
    "COMMAND",
    "CREATED",
    "STATUS",
    "PORTS",
    "NAMES",
];
const IMAGE_HEADERS: [&str; 5] = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
const STATS_HEADERS: [&str; 8] = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
];

/// A daemon with busybox, a running container `web` (`sleep 1000`) and an exited one
/// `done` (exit 3, a command longer than docker's 20-character COMMAND column). Returns
/// the daemon, the image ID and the two container IDs.
fn fixture() -> (Daemon, String, String, String) {
    let d = daemon();
    let image = import_busybox(&d, "busybox:latest");
    let web = d
        .ok(&["run", "-d", "--name", "web", "busybox", "sleep", "1000"])
        .trim()
        .to_owned();
    let o = d.run(&[
        "run",
        "--name",
        "done",
        "busybox",
        "sh",
        "-c",
        "exit 3; echo unreachable",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let done = d
        .ok(&["inspect", "-f", "{{.Id}}", "done"])
        .trim()
        .to_owned();
    (d, image, web, done)
}

/// Requirement 3: with nothing to list, the tables are exactly docker's header lines.
#[test]
fn empty_tables_are_dockers_header_lines() {
    let d = daemon();
    let ps = "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES\n";
    assert_eq!(d.ok(&["ps"]), ps);
    assert_eq!(d.ok(&["ps", "-a"]), ps);
    assert_eq!(d.ok(&["container", "ls"]), ps);
    let images = "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n";
    assert_eq!(d.ok(&["image", "ls"]), images);
    assert_eq!(d.ok(&["images"]), images);
    assert_eq!(d.ok(&["volume", "ls"]), "DRIVER    VOLUME NAME\n");
    assert_eq!(
        d.ok(&["stats", "--no-stream"]),
        "CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT   MEM %     NET I/O   BLOCK I/O   PIDS\n"
    );
    for q in [
        &["ps", "-q"][..],
        &["images", "-q"],
        &["volume", "ls", "-q"],
    ] {
        assert_eq!(d.ok(q), "", "{q:?}: nothing, not even a header");
    }
}

/// Requirement 3: with rows, `ps`, `image ls`, `volume ls` and `stats --no-stream` are laid
/// out by docker's tabwriter rule (columns padded to the widest cell + 3, at least 10), and
/// the cells hold docker's values (short IDs, quoted and ellipsized commands, statuses).
#[test]
fn tables_are_aligned_like_dockers_tabwriter() {
    let (d, image, web, done) = fixture();
    let out = d.ok(&["ps", "-a"]);
    let rows = assert_docker_table(&out, &PS_HEADERS);
    assert_eq!(rows.len(), 3, "{out}");
    // Newest first.
    let (r_done, r_web) = (&rows[1], &rows[2]);
    assert_eq!(r_done[0], short(&done));
    assert_eq!(r_done[1], "busybox");
    assert_eq!(
        r_done[2], "\"sh -c 'exit 3; echo…\"",
        "quoted, ellipsized to 20 characters"
    );
    assert!(r_done[3].ends_with(" ago"), "{:?}", r_done[3]);
    assert!(
        r_done[4].starts_with("Exited (3) ") && r_done[4].ends_with(" ago"),
        "{:?}",
        r_done[4]
    );
    assert_eq!((r_done[5].as_str(), r_done[6].as_str()), ("", "done"));
    assert_eq!(r_web[0], short(&web));
    assert_eq!(r_web[2], "\"sleep 1000\"");
    assert!(r_web[4].starts_with("Up "), "{:?}", r_web[4]);
    assert_eq!(r_web[6], "web");
    // Running only by default.
    let rows = assert_docker_table(&d.ok(&["ps"]), &PS_HEADERS);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][6], "web");

    d.ok(&[
        "image",
        "tag",
        "busybox",
        "registry.example.com:5000/team/a-much-longer-repository-name:v1.2.3",
    ]);
    let out = d.ok(&["image", "ls"]);
    let rows = assert_docker_table(&out, &IMAGE_HEADERS);
    assert_eq!(rows.len(), 3, "{out}");
    for r in &rows[1..] {
        assert_eq!(r[2], short(&image));
        assert!(r[3].ends_with(" ago"), "{r:?}");
        assert!(r[4].ends_with("MB"), "{r:?}");
    }
    let repos: BTreeSet<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        repos,
        BTreeSet::from([
            "busybox",
            "registry.example.com:5000/team/a-much-longer-repository-name"
        ])
    );

    d.ok(&["volume", "create", "v1"]);
    d.ok(&["volume", "create", "a-much-longer-volume-name"]);
    let out = d.ok(&["volume", "ls"]);
    let rows = assert_docker_table(&out, &["DRIVER", "VOLUME NAME"]);
    let names: BTreeSet<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["a-much-longer-volume-name", "v1"]));
    assert!(rows[1..].iter().all(|r| r[0] == "local"));

    let out = d.ok(&["stats", "--no-stream"]);
    let rows = assert_docker_table(&out, &STATS_HEADERS);
    assert_eq!(rows.len(), 2, "running containers only: {out}");
    assert_eq!(
        (rows[1][0].as_str(), rows[1][1].as_str()),
        (short(&web).as_str(), "web")
    );
    assert!(
        rows[1][2].ends_with('%') && rows[1][4].ends_with('%'),
        "{:?}",
        rows[1]
    );
    assert!(rows[1][3].contains(" / "), "{:?}", rows[1]);
    assert_eq!(rows[1][7], "1", "one process: sleep");
}

/// Requirement 3: `-q` prints only IDs (or names), one per line, no header.
#[test]
fn quiet_prints_only_ids_or_names() {
    let (d, image, web, done) = fixture();
    assert_eq!(d.ok(&["ps", "-q"]), format!("{}\n", short(&web)));
    assert_eq!(
        d.ok(&["ps", "-aq"]),
        format!("{}\n{}\n", short(&done), short(&web))
    );
    assert_eq!(
        d.ok(&["ps", "-aq", "--no-trunc"]),
        format!("{done}\n{web}\n")
    );
    assert_eq!(d.ok(&["images", "-q"]), format!("{}\n", short(&image)));
    assert_eq!(
        d.ok(&["image", "ls", "-q", "--no-trunc"]),
        format!("{image}\n")
    );
    d.ok(&["image", "tag", "busybox", "other:1"]);
    assert_eq!(
        d.ok(&["images", "-q"]),
        format!("{}\n", short(&image)),
        "one line per image, not per tag"
    );
    d.ok(&["volume", "create", "vol-a"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "vol-a\n");
    // -q wins over --format, as in docker.
    assert_eq!(
        d.ok(&["ps", "-q", "--format", "{{.Names}}"]),
        format!("{}\n", short(&web))
    );
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// JSON lines of a `--format json` output: one object per line.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not one JSON object: {e}"))
        })
        .collect()
}

/// Requirement 3: `--format json` prints one JSON object per line with docker's field names
/// (and docker's value formats: `CreatedAt` as Go's `time.String()`).
#[test]
fn format_json_is_one_object_per_line_with_dockers_fields() {
    let (d, image, web, done) = fixture();
    let cli = |args: &[&str]| {
        let o = d.cli().env("TZ", "UTC").args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let created = |id: &str| -> String {
        let c = d.ok(&["inspect", "-f", "{{.Created}}", id]);
        let t = chrono::DateTime::parse_from_rfc3339(c.trim()).unwrap();
        t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
    };

    let ps = json_lines(&cli(&["ps", "-a", "--format", "json"]));
    assert_eq!(ps.len(), 2);
    let core = set(&[
        "Command",
        "CreatedAt",
        "ID",
        "Image",
        "Labels",
        "LocalVolumes",
        "Mounts",
        "Names",
        "Networks",
        "Ports",
        "RunningFor",
        "Size",
        "State",
        "Status",
    ]);
    // Newer docker clients add these; nothing else is docker's.
    let newer = set(&["Platform", "HealthStatus", "IPAddresses"]);
    for row in &ps {
        let k = keys(row);
        assert!(
            k.is_superset(&core),
            "missing {:?}",
            core.difference(&k).collect::<Vec<_>>()
        );
        assert!(
            k.difference(&core).all(|x| newer.contains(x)),
            "not docker's: {k:?}"
        );
    }
    let (j_done, j_web) = (&ps[0], &ps[1]);
    assert_eq!(j_web["ID"], short(&web).as_str());
    assert_eq!(j_web["Names"], "web");
    assert_eq!(j_web["Image"], "busybox");
    assert_eq!(j_web["Command"], "\"sleep 1000\"");
    assert_eq!(j_web["State"], "running");
    assert_eq!(j_web["LocalVolumes"], "0");
    assert_eq!(j_web["CreatedAt"], created(&web).as_str());
    assert_eq!(j_done["Names"], "done");
    assert_eq!(j_done["State"], "exited");
    assert_eq!(j_done["CreatedAt"], created(&done).as_str());

    let images = json_lines(&cli(&["images", "--format", "json"]));
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(
        keys(img),
        set(&[
            "Containers",
            "CreatedAt",
            "CreatedSince",
            "Digest",
            "ID",
            "Repository",
            "SharedSize",
            "Size",
            "Tag",
            "UniqueSize",
            "VirtualSize",
        ])
    );
    assert_eq!(img["ID"], short(&image).as_str());
    assert_eq!(
        (img["Repository"].as_str(), img["Tag"].as_str()),
        (Some("busybox"), Some("latest"))
    );
    assert_eq!(img["Digest"], "<none>");
    assert_eq!(img["CreatedAt"], "2024-01-01 00:00:00 +0000 UTC");
    assert!(
        img["CreatedSince"].as_str().unwrap().ends_with(" ago"),
        "{img}"
    );
    assert!(img["Size"].as_str().unwrap().ends_with("MB"), "{img}");
    assert!(
        img["VirtualSize"].as_str().unwrap().ends_with("MB"),
        "{img}"
    );

    d.ok(&["volume", "create", "--label", "team=a", "vol-j"]);
    let vols = json_lines(&cli(&["volume", "ls", "--format", "json"]));
    assert_eq!(vols.len(), 1);
    let v = &vols[0];
    assert_eq!(
        keys(v),
        set(&[
            "Availability",
            "Driver",
            "Group",
            "Labels",
            "Links",
            "Mountpoint",
            "Name",
            "Scope",
            "Size",
            "Status"
        ])
    );
    assert_eq!(
        (
            v["Name"].as_str(),
            v["Driver"].as_str(),
            v["Scope"].as_str()
        ),
        (Some("vol-j"), Some("local"), Some("local"))
    );
    assert_eq!(v["Labels"], "team=a");
    assert!(
        v["Mountpoint"]
            .as_str()
            .unwrap()
            .starts_with(d.data.to_str().unwrap()),
        "{v}"
    );

    let stats = json_lines(&cli(&["stats", "--no-stream", "--format", "json"]));
    assert_eq!(stats.len(), 1);
    assert_eq!(
        keys(&stats[0]),
        set(&[
            "BlockIO",
            "CPUPerc",
            "Container",
            "ID",
            "MemPerc",
            "MemUsage",
            "Name",
            "NetIO",
            "PIDs"
        ])
    );
    assert_eq!(stats[0]["Name"], "web");
}

/// Requirement 3: Go templates (`--format '{{.Names}} {{.Status}}'`) and custom tables
/// (`table {{.ID}}\t{{.Image}}`).
#[test]
fn go_templates_and_custom_tables() {
    let (d, image, web, done) = fixture();
    let out = d.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    let ls = lines(&out);
    assert_eq!(ls.len(), 2, "{out}");
    assert!(
        ls[0].starts_with("done Exited (3) ") && ls[0].ends_with(" ago"),
        "{out}"
    );
    assert!(ls[1].starts_with("web Up "), "{out}");

    let out = d.ok(&["ps", "-a", "--format", "table {{.ID}}\t{{.Image}}"]);
    let want = tabwrite(&[
        vec!["CONTAINER ID".into(), "IMAGE".into()],
        vec![short(&done), "busybox".into()],
        vec![short(&web), "busybox".into()],
    ]);
    assert_eq!(out, want);
    assert_eq!(out.lines().next(), Some("CONTAINER ID   IMAGE"));

    let out = d.ok(&[
        "images",
        "--format",
        "table {{.Repository}}:{{.Tag}}\t{{.ID}}",
    ]);
    assert_eq!(
        out,
        tabwrite(&[
            vec!["REPOSITORY:TAG".into(), "IMAGE ID".into()],
            vec!["busybox:latest".into(), short(&image)],
        ])
    );
    assert_eq!(
        d.ok(&["ps", "--format", "{{.ID}}|{{.Command}}|{{.State}}"]),
        format!("{}|\"sleep 1000\"|running\n", short(&web))
    );
    assert_eq!(
        d.ok(&["images", "--format", "{{.Repository}}"]),
        "busybox\n"
    );
    assert_eq!(
        d.ok(&["ps", "-a", "--format", "{{json .Names}}"]),
        "\"done\"\n\"web\"\n"
    );
}

/// Requirement 3: `--no-trunc` prints full IDs (and whole commands).
#[test]
fn no_trunc_prints_full_ids() {
    let (d, image, web, done) = fixture();
    let out = d.ok(&["ps", "-a", "--no-trunc"]);
    let rows = assert_docker_table(&out, &PS_HEADERS);
    assert_eq!(rows[1][0], done);
    assert_eq!(rows[2][0], web);
    assert_eq!(done.len(), 64);
    assert_eq!(rows[1][2], "\"sh -c 'exit 3; echo unreachable'\"");
    let rows = assert_docker_table(&d.ok(&["images", "--no-trunc"]), &IMAGE_HEADERS);
    assert_eq!(rows[1][2], image);
    assert!(image.starts_with("sha256:") && image.len() == 71);
    assert_eq!(
        d.ok(&["ps", "--no-trunc", "--format", "{{.ID}}"]),
        format!("{web}\n")
    );
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

/// Requirement 3: `inspect` of a container prints a JSON array shaped like Docker's.
#[test]
fn inspect_container_is_docker_shaped() {
    let (d, image, web, done) = fixture();
    let out = d.ok(&["inspect", "web"]);
    assert!(
        out.starts_with("[\n    {\n"),
        "docker's 4-space indented array: {out:.40}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    let c = &arr[0];
    assert_eq!(c["Id"], web.as_str());
    assert!(is_rfc3339(&c["Created"]), "{}", c["Created"]);
    assert_eq!(c["Path"], "sleep");
    assert_eq!(c["Args"], serde_json::json!(["1000"]));
    assert_eq!(c["Image"], image.as_str());
    assert_eq!(c["Name"], "/web");
    let st = &c["State"];
    assert!(
        keys(st).is_superset(&set(&[
            "Status",
            "Running",
            "Paused",
            "Restarting",
            "OOMKilled",
            "Dead",
            "Pid",
            "ExitCode",
            "Error",
            "StartedAt",
            "FinishedAt",
        ])),
        "{st}"
    );
    assert_eq!(st["Status"], "running");
    assert_eq!(st["Running"], true);
    for k in ["Paused", "Restarting", "OOMKilled", "Dead"] {
        assert_eq!(st[k], false, "{k}");
    }
    assert!(st["Pid"].as_i64().unwrap() > 1);
    assert_eq!(
        (st["ExitCode"].as_i64(), st["Error"].as_str()),
        (Some(0), Some(""))
    );
    assert!(is_rfc3339(&st["StartedAt"]));
    assert_eq!(st["FinishedAt"], "0001-01-01T00:00:00Z");
    assert!(c["HostConfig"].is_object());
    assert_eq!(c["HostConfig"]["NetworkMode"], "none");
    let gd = &c["GraphDriver"];
    assert_eq!(gd["Name"], "overlay2");
    for k in ["LowerDir", "UpperDir", "MergedDir", "WorkDir"] {
        let p = gd["Data"][k]
            .as_str()
            .unwrap_or_else(|| panic!("GraphDriver.Data.{k}: {gd}"));
        assert!(p.starts_with(d.data.to_str().unwrap()), "{k}: {p}");
    }
    assert!(c["Mounts"].is_array());
    assert_eq!(c["Config"]["Image"], "busybox");
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sleep", "1000"]));

    // An exited container.
    let v: Value = serde_json::from_str(&d.ok(&["container", "inspect", "done"])).unwrap();
    let st = &v[0]["State"];
    assert_eq!(
        (
            st["Status"].as_str(),
            st["Running"].as_bool(),
            st["ExitCode"].as_i64()
        ),
        (Some("exited"), Some(false), Some(3))
    );
    assert_eq!(st["Pid"], 0);
    assert!(is_rfc3339(&st["FinishedAt"]) && st["FinishedAt"] != "0001-01-01T00:00:00Z");
    assert_eq!(v[0]["Id"], done.as_str());

    // Several at once: one array.
    let v: Value = serde_json::from_str(&d.ok(&["inspect", "web", "done"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

/// Requirement 3: `inspect` of an image prints a JSON array shaped like Docker's.
#[test]
fn inspect_image_is_docker_shaped() {
    let d = daemon();
    let (p, built) = docker_archive(
        &d,
        "bb.tar",
        &shoal_testkit::images::ImageBuilder::busybox(),
        &["busybox:latest"],
    );
    d.ok(&["image", "import", p.to_str().unwrap()]);
    for args in [
        &["image", "inspect", "busybox"][..],
        &["inspect", "busybox:latest"],
        &["inspect", "--type", "image", &built.config_digest],
    ] {
        let out = d.ok(args);
        assert!(out.starts_with("[\n    {\n"), "{args:?}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let i = &v[0];
        assert_eq!(i["Id"], built.config_digest.as_str(), "{args:?}");
        assert_eq!(i["RepoTags"], serde_json::json!(["busybox:latest"]));
        assert_eq!(i["RepoDigests"], serde_json::json!([]));
        assert_eq!(
            i["Created"], "2024-01-01T00:00:00Z",
            "Go's RFC3339Nano, as docker prints it"
        );
        assert_eq!(i["Config"]["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(i["Architecture"], shoal_testkit::images::host_arch());
        assert_eq!(i["Os"], "linux");
        assert!(i["Size"].as_u64().unwrap() > 1_000_000);
        assert_eq!(i["RootFS"]["Type"], "layers");
        assert_eq!(i["RootFS"]["Layers"], serde_json::json!(built.diff_ids));
    }
}

/// Requirement 3: `inspect -f` renders a Go template per object.
#[test]
fn inspect_format_templates() {
    let (d, image, web, _) = fixture();
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", "done"]),
        "3\n"
    );
    assert_eq!(
        d.ok(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}} {{.Name}}",
            "web",
            "done"
        ]),
        "0 /web\n3 /done\n"
    );
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.Image}}", "web"]),
        format!("{image}\n")
    );
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.GraphDriver.Name}}", "web"]),
        "overlay2\n"
    );
    assert_eq!(
        d.ok(&["inspect", "-f", "{{json .Config.Cmd}}", web.as_str()]),
        "[\"sleep\",\"1000\"]\n"
    );
    assert_eq!(
        d.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            "busybox"
        ]),
        format!("linux/{}\n", shoal_testkit::images::host_arch())
    );
    let o = fails(&d, &["inspect", "-f", "{{.NoSuchField}}", "web"]);
    assert!(
        stderr(&o).contains("NoSuchField"),
        "a missing key is an error: {}",
        stderr(&o)
    );
}

/// Requirement 3: errors worded like Docker's: `Error response from daemon: No such
/// container: x`, and `Error: No such object: x` for `inspect`.
#[test]
fn errors_are_worded_like_dockers() {
    let d = daemon();
    for verb in [
        &["rm"][..],
        &["stop"],
        &["kill"],
        &["start"],
        &["logs"],
        &["container", "wait"],
        &["container", "pause"],
    ] {
        let mut args = verb.to_vec();
        args.push("nosuch");
        let o = fails(&d, &args);
        assert_eq!(
            stderr(&o),
            "Error response from daemon: No such container: nosuch\n",
            "{args:?}"
        );
        assert_eq!(o.status.code(), Some(1), "{args:?}");
    }
    let o = fails(&d, &["inspect", "nosuch"]);
    assert_eq!(stderr(&o), "Error: No such object: nosuch\n");
    assert_eq!(stdout(&o), "[]\n", "docker prints an empty array");
    assert_eq!(o.status.code(), Some(1));
    let o = fails(&d, &["container", "inspect", "nosuch"]);
    assert_eq!(stderr(&o), "Error: No such container: nosuch\n");
    let o = fails(&d, &["image", "inspect", "nosuch"]);
    assert_eq!(stderr(&o), "Error: No such image: nosuch\n");
    let o = fails(&d, &["volume", "inspect", "nosuch"]);
    assert_eq!(stderr(&o), "Error: No such volume: nosuch\n");
    // One found, one not: the found one is printed, the error reported, exit 1.
    let id = import_busybox(&d, "busybox:latest");
    let o = fails(&d, &["inspect", "-f", "{{.Id}}", "busybox", "nosuch"]);
    assert_eq!(stdout(&o), format!("{id}\n"));
    assert_eq!(stderr(&o), "Error: No such object: nosuch\n");
    // `run` of a missing local image with no registry: exit 125, docker's "shoal:" prefix.
    let o = fails(&d, &["run", "--rm", "127.0.0.1:1/nosuch:latest", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("Unable to find image '127.0.0.1:1/nosuch:latest' locally\n"),
        "{}",
        stderr(&o)
    );
}
