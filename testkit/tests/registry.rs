//! The kit against real processes: docker-registry, skopeo, our token issuer and proxy.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use shoal_testkit::images::{
    BuiltImage, Compression, ImageBuilder, MEDIA_INDEX, multi_arch_layout,
};
use shoal_testkit::registry::{
    CountingProxy, PushFormat, REGISTRY_BIN, Registry, RegistryOptions, http_get,
};
use shoal_testkit::tls::TestCa;
use shoal_testkit::token::TokenIssuer;

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Loud skip when the host lacks the registry or skopeo.
fn tools_missing() -> bool {
    for tool in [REGISTRY_BIN, "/usr/bin/skopeo"] {
        if !Path::new(tool).exists() {
            eprintln!("SKIPPED: {tool} is missing (Debian packages docker-registry, skopeo)");
            return true;
        }
    }
    false
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn manifest(
    base: &str,
    repo: &str,
    reference: &str,
    auth: Option<&str>,
) -> shoal_testkit::registry::HttpResponse {
    let mut h = vec![("Accept", ACCEPT)];
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    http_get(
        &format!("http://{base}/v2/{repo}/manifests/{reference}"),
        &h,
    )
    .unwrap()
}

/// Write `img` as a one-image layout and push it to `reg` as `dest`.
fn push(reg: &Registry, img: &ImageBuilder, dest: &str, format: PushFormat) -> BuiltImage {
    let d = tempfile::tempdir().unwrap();
    let built = img
        .write_oci_layout(d.path(), Some("latest"), None)
        .unwrap();
    reg.push_layout(d.path(), dest, format, false).unwrap();
    built
}

#[test]
fn push_preserves_digests_for_every_compression() {
    if tools_missing() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    for (i, c) in [Compression::Gzip, Compression::None, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let img = ImageBuilder::busybox().compression(c);
        let built = push(&reg, &img, &format!("busybox{i}:latest"), PushFormat::Oci);
        let r = manifest(&reg.addr, &format!("busybox{i}"), "latest", None);
        assert_eq!(r.status, 200, "{c:?}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, built.manifest_json, "{c:?}: manifest rewritten");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(built.manifest_digest.as_str())
        );
        let blob = http_get(
            &format!(
                "{}/v2/busybox{i}/blobs/{}",
                reg.url(),
                built.layer_digests[0]
            ),
            &[],
        )
        .unwrap();
        assert_eq!(blob.status, 200);
        assert_eq!(
            sha(&blob.body),
            built.layer_digests[0],
            "{c:?}: layer recompressed"
        );
    }
}

/// Docker schema 2 conversion: the manifest changes; gzip layer blobs are reused as they are.
#[test]
fn push_v2s2_converts_manifest_keeps_gzip_layers() {
    if tools_missing() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let built = push(
        &reg,
        &ImageBuilder::busybox(),
        "v2s2:latest",
        PushFormat::DockerV2S2,
    );
    let r = manifest(&reg.addr, "v2s2", "latest", None);
    assert_eq!(r.status, 200);
    let m: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        m["layers"][0]["digest"].as_str(),
        Some(built.layer_digests[0].as_str())
    );
    assert_ne!(
        r.header("docker-content-digest"),
        Some(built.manifest_digest.as_str())
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        m["config"]["digest"].as_str(),
        Some(built.config_digest.as_str())
    );
}

#[test]
fn tls_registry_serves_shared_storage() {
    if tools_missing() {
        return;
    }
    let plain = Registry::start(RegistryOptions::default()).unwrap();
    let built = push(
        &plain,
        &ImageBuilder::busybox(),
        "tls/busybox:latest",
        PushFormat::Oci,
    );
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&[]).unwrap();
    let (_ca, cert, key) = ca.write_to(certs.path()).unwrap();
    // skopeo --cert-dir wants only the CA (`*.crt`) in its directory.
    let ca_dir = tempfile::tempdir().unwrap();
    ca.write_to(ca_dir.path()).unwrap();
    std::fs::remove_file(ca_dir.path().join("server.crt")).unwrap();
    std::fs::remove_file(ca_dir.path().join("server.key")).unwrap();
    let tls = Registry::start(RegistryOptions {
        storage_dir: Some(plain.storage_dir.clone()),
        tls: Some((cert, key)),
        ..Default::default()
    })
    .unwrap();
    assert!(tls.url().starts_with("https://"));
    // Plain HTTP to the TLS port is refused by the TLS server.
    assert_eq!(
        http_get(&format!("http://{}/v2/", tls.addr), &[])
            .unwrap()
            .status,
        400
    );
    let inspect = |extra: &[&str]| {
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(extra)
            .arg(format!("docker://{}/tls/busybox:latest", tls.addr))
            .output()
            .unwrap()
    };
    let ok = inspect(&["--cert-dir", ca_dir.path().to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(ok.stdout, built.manifest_json);
    // Without our CA the certificate is not trusted: TLS really is verified above.
    let untrusted = inspect(&["--cert-dir", certs.path().join("none").to_str().unwrap()]);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        stderr.contains("certificate") || stderr.contains("x509"),
        "{stderr}"
    );
}

#[test]
fn token_registry_end_to_end() {
    if tools_missing() {
        return;
    }
    let plain = Registry::start(RegistryOptions::default()).unwrap();
    let built = push(
        &plain,
        &ImageBuilder::busybox(),
        "public/busybox:latest",
        PushFormat::Oci,
    );
    push(
        &plain,
        &ImageBuilder::busybox(),
        "private/busybox:latest",
        PushFormat::Oci,
    );
    let issuer =
        TokenIssuer::start(&[("alice", "s3cret")], "shoal-registry", "shoal-testkit").unwrap();
    let reg = Registry::start(RegistryOptions {
        storage_dir: Some(plain.storage_dir.clone()),
        token: Some(issuer.token_registry_config()),
        ..Default::default()
    })
    .unwrap();

    // Anonymous: 401 with a Bearer challenge naming our realm.
    let r = manifest(&reg.addr, "public/busybox", "latest", None);
    assert_eq!(r.status, 401);
    let chal = r.header("www-authenticate").unwrap().to_string();
    assert!(chal.starts_with("Bearer "), "{chal}");
    assert!(
        chal.contains(&format!("realm=\"{}\"", issuer.realm())),
        "{chal}"
    );
    assert!(chal.contains("service=\"shoal-registry\""), "{chal}");
    assert!(
        chal.contains("scope=\"repository:public/busybox:pull\""),
        "{chal}"
    );

    let token = |scope: &str, basic: Option<&str>| {
        let url = format!("{}?service=shoal-registry&scope={scope}", issuer.realm());
        let auth = basic.map(|b| format!("Basic {}", base64_encode(b)));
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = http_get(&url, &h).unwrap();
        if r.status != 200 {
            return Err(r.status);
        }
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["token"], v["access_token"]);
        assert_eq!(v["expires_in"], 300);
        Ok(format!("Bearer {}", v["token"].as_str().unwrap()))
    };
    let anon_pub = token("repository:public/busybox:pull", None).unwrap();
    let r = manifest(&reg.addr, "public/busybox", "latest", Some(&anon_pub));
    assert_eq!(
        r.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&r.body),
        std::fs::read_to_string(&reg.log_path).unwrap()
    );
    assert_eq!(r.body, built.manifest_json);

    let anon_priv = token("repository:private/busybox:pull", None).unwrap();
    let r = manifest(&reg.addr, "private/busybox", "latest", Some(&anon_priv));
    assert!(r.status == 401 || r.status == 403, "{}", r.status);
    // A public-pull token does not open the private repository either.
    assert!(matches!(
        manifest(&reg.addr, "private/busybox", "latest", Some(&anon_pub)).status,
        401 | 403
    ));

    let alice = token("repository:private/busybox:pull", Some("alice:s3cret")).unwrap();
    assert_eq!(
        manifest(&reg.addr, "private/busybox", "latest", Some(&alice)).status,
        200
    );
    assert_eq!(
        token("repository:private/busybox:pull", Some("alice:wrong")),
        Err(401)
    );

    // A token signed by a key the registry does not trust is rejected: the x5c chain is
    // really checked against rootcertbundle.
    let rogue =
        TokenIssuer::start(&[("alice", "s3cret")], "shoal-registry", "shoal-testkit").unwrap();
    let forged = rogue
        .mint(
            "alice",
            &[("repository", "private/busybox", &["pull"])],
            Duration::from_secs(60),
        )
        .unwrap();
    let r = manifest(
        &reg.addr,
        "private/busybox",
        "latest",
        Some(&format!("Bearer {forged}")),
    );
    assert_eq!(r.status, 401);
    let good = issuer
        .mint(
            "alice",
            &[("repository", "private/busybox", &["pull"])],
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        manifest(
            &reg.addr,
            "private/busybox",
            "latest",
            Some(&format!("Bearer {good}"))
        )
        .status,
        200
    );

    assert_eq!(
        issuer.issued(),
        vec![
            (None, "repository:public/busybox:pull".to_string()),
            (None, "repository:private/busybox:pull".to_string()),
            (
                Some("alice".to_string()),
                "repository:private/busybox:pull".to_string()
            ),
        ]
    );

    // A real client does the whole dance (challenge, Basic to the issuer, Bearer).
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
        ])
        .arg(format!("docker://{}/private/busybox:latest", reg.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, built.manifest_json);
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn htpasswd_registry_requires_basic_auth() {
    if tools_missing() {
        return;
    }
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("bob".into(), "pw".into())),
        ..Default::default()
    })
    .unwrap();
    let built = push(
        &reg,
        &ImageBuilder::busybox(),
        "secret/busybox:latest",
        PushFormat::Oci,
    );
    assert_eq!(
        manifest(&reg.addr, "secret/busybox", "latest", None).status,
        401
    );
    let auth = format!("Basic {}", base64_encode("bob:pw"));
    let r = manifest(&reg.addr, "secret/busybox", "latest", Some(&auth));
    assert_eq!((r.status, r.body), (200, built.manifest_json));
}

#[test]
fn multi_arch_push_serves_an_index() {
    if tools_missing() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let images = [
        ImageBuilder::busybox()
            .architecture("amd64")
            .layer_files(&[("/arch", "amd64", 0o644)]),
        ImageBuilder::busybox()
            .architecture("arm64")
            .variant("v8")
            .layer_files(&[("/arch", "arm64", 0o644)]),
    ];
    let (index_digest, built) = multi_arch_layout(d.path(), "latest", &images).unwrap();
    reg.push_layout(d.path(), "multi:latest", PushFormat::Oci, true)
        .unwrap();
    let r = manifest(&reg.addr, "multi", "latest", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(index_digest.as_str())
    );
    let idx: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(idx["mediaType"], MEDIA_INDEX);
    let plats: Vec<_> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap(),
                m["digest"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        plats,
        vec![
            ("amd64", built[0].manifest_digest.as_str()),
            ("arm64", built[1].manifest_digest.as_str())
        ]
    );
    assert_eq!(idx["manifests"][1]["platform"]["variant"], "v8");
    for b in &built {
        let m = manifest(&reg.addr, "multi", &b.manifest_digest, None);
        assert_eq!((m.status, &m.body), (200, &b.manifest_json));
        // The marker layer of each platform is served.
        let top = b.layer_digests.last().unwrap();
        assert_eq!(
            http_get(&format!("{}/v2/multi/blobs/{top}", reg.url()), &[])
                .unwrap()
                .status,
            200
        );
    }
}

#[test]
fn counting_proxy_records_and_stalls() {
    if tools_missing() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    let built = push(
        &reg,
        &ImageBuilder::busybox(),
        "p/busybox:latest",
        PushFormat::Oci,
    );
    let proxy = CountingProxy::start(&reg.addr).unwrap();
    let r = manifest(&proxy.addr, "p/busybox", "latest", None);
    assert_eq!((r.status, &r.body), (200, &built.manifest_json));
    let layer = built.layer_digests[0].clone();
    let blob_url = format!("{}/v2/p/busybox/blobs/{layer}", proxy.url());
    let part = http_get(&blob_url, &[("Range", "bytes=0-99")]).unwrap();
    assert_eq!((part.status, part.body.len()), (206, 100));

    proxy.stall_after("/blobs/sha256:", 4096);
    let url = blob_url.clone();
    let getter = std::thread::spawn(move || http_get(&url, &[]).unwrap());
    assert!(
        proxy.wait_stalled(Duration::from_secs(10)),
        "no response was held"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!getter.is_finished(), "the held download finished anyway");
    assert_eq!(proxy.held(), 1);
    proxy.release();
    let full = getter.join().unwrap();
    assert_eq!(full.status, 200);
    assert_eq!(sha(&full.body), layer);
    assert_eq!(proxy.held(), 0);

    let reqs = proxy.requests();
    let paths: Vec<_> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.range.as_deref()))
        .collect();
    let blob_path = format!("/v2/p/busybox/blobs/{layer}");
    assert_eq!(
        paths,
        vec![
            ("GET", "/v2/p/busybox/manifests/latest", None),
            ("GET", blob_path.as_str(), Some("bytes=0-99")),
            ("GET", blob_path.as_str(), None),
        ]
    );
    assert_eq!(proxy.count("GET", "/blobs/"), 2);
    proxy.clear();
    assert!(proxy.requests().is_empty());
}

#[test]
fn archives_are_readable_by_skopeo() {
    if tools_missing() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = ImageBuilder::busybox().label("k", "v");
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let gunzip = |p: &Path| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()),
            &mut out,
        )
        .unwrap();
        out
    };
    // docker save format (skopeo 1.9 reads it only uncompressed; `docker load` takes both).
    let (p, pz) = (d.path().join("docker.tar"), d.path().join("docker.tar.gz"));
    let built = img
        .write_docker_archive(&p, &["example.com/busybox:1.0"], false)
        .unwrap();
    assert_eq!(
        img.write_docker_archive(&pz, &["example.com/busybox:1.0"], true)
            .unwrap(),
        built
    );
    assert_eq!(gunzip(&pz), std::fs::read(&p).unwrap());
    let src = format!("docker-archive:{}", p.display());
    assert_eq!(
        skopeo(&["inspect", "--config", "--raw", &src]),
        built.config_json
    );
    let m: Value = serde_json::from_slice(&skopeo(&["inspect", "--raw", &src])).unwrap();
    assert_eq!(
        m["layers"][0]["digest"].as_str(),
        Some(built.diff_ids[0].as_str())
    );
    // OCI archive (containers/image reads it only uncompressed).
    let (p, pz) = (d.path().join("oci.tar"), d.path().join("oci.tar.gz"));
    let built = img
        .write_oci_archive(&p, Some("1.0"), Some("example.com/busybox:1.0"), false)
        .unwrap();
    img.write_oci_archive(&pz, Some("1.0"), Some("example.com/busybox:1.0"), true)
        .unwrap();
    assert_eq!(gunzip(&pz), std::fs::read(&p).unwrap());
    let src = format!("oci-archive:{}:1.0", p.display());
    assert_eq!(skopeo(&["inspect", "--raw", &src]), built.manifest_json);
}
