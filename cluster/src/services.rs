//! The control operations behind `service …`: create, update (and rollback), remove,
//! pause, and the reads `service ls|ps|inspect` need. They validate what the user asked,
//! pin the image to a digest, and write the service; the orchestrators (on the leader)
//! turn services into tasks.

use std::time::Duration;

use chrono::Utc;
use shoal_store::model::{Mode, Service, ServiceSpec, Task, TaskState, UpdateState, UpdateStatus};
use shoal_store::{Action, Object, Proposal};

use crate::SwarmError;
use crate::manager::Manager;
use crate::orchestrator::constraint;

/// What `service create` may ask besides the spec.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// `--no-resolve-image`: keep the image reference as given.
    pub no_resolve_image: bool,
    /// `--with-registry-auth`: the client's `X-Registry-Auth` value, sent to the nodes.
    pub registry_auth: Option<String>,
}

/// A service with its task counts (`service ls` REPLICAS).
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub service: Service,
    pub running: u64,
    pub desired: u64,
    pub completed: u64,
}

impl Manager {
    /// Creates a service; returns its ID and warnings.
    pub async fn create_service(
        &self,
        mut spec: ServiceSpec,
        opts: CreateOptions,
    ) -> Result<(String, Vec<String>), SwarmError> {
        if spec.name.is_empty() {
            spec.name = unused_name(self)?;
        }
        validate(&spec)?;
        if self
            .store()
            .list::<Service>()?
            .iter()
            .any(|s| s.spec.name == spec.name)
        {
            return Err(SwarmError::Conflict(format!(
                "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {} already exists",
                spec.name
            )));
        }
        let mut warnings = Vec::new();
        if !opts.no_resolve_image {
            self.pin_image(&mut spec, opts.registry_auth.as_deref(), &mut warnings)
                .await;
        }
        let id = crate::pki::new_node_id()?;
        let job = spec.mode.is_job();
        let service = Service {
            id: id.clone(),
            spec,
            spec_version: 1,
            registry_auth: opts.registry_auth.clone().unwrap_or_default(),
            job_status: job.then(|| shoal_store::model::JobStatus {
                job_iteration: 0,
                last_execution: Some(Utc::now()),
            }),
            ..Default::default()
        };
        self.propose(Proposal {
            actions: vec![Action::Create(Object::Service(service))],
            at: Utc::now(),
        })
        .await
        .map_err(|e| match e {
            SwarmError::Conflict(_) => SwarmError::Conflict(
                "rpc error: code = AlreadyExists desc = name conflicts with an existing object"
                    .into(),
            ),
            other => other,
        })?;
        Ok((id, warnings))
    }

    /// Replaces a service's spec (`service update`); `version` is the one the caller read
    /// (a stale one is refused, as Docker's). With `rollback`, the previous spec comes back
    /// and `spec` is ignored.
    pub async fn update_service(
        &self,
        key: &str,
        version: u64,
        spec: Option<ServiceSpec>,
        rollback: bool,
        opts: CreateOptions,
    ) -> Result<Vec<String>, SwarmError> {
        let current = self.service(key)?;
        if version != 0 && version != current.meta.version {
            return Err(SwarmError::Conflict(format!(
                "rpc error: code = Unknown desc = update out of sequence (service {} is at version {}, the update was for {version})",
                current.id, current.meta.version
            )));
        }
        let mut warnings = Vec::new();
        let mut svc = current.clone();
        let now = Utc::now();
        if rollback {
            let Some(prev) = current.previous_spec.clone() else {
                return Err(SwarmError::FailedPrecondition(format!(
                    "service {} does not have a previous spec",
                    current.id
                )));
            };
            svc.previous_spec = Some(current.spec.clone());
            svc.spec = prev;
            svc.update_status = Some(UpdateStatus {
                state: UpdateState::RollbackStarted,
                started_at: Some(now),
                completed_at: None,
                message: "manually requested rollback".into(),
            });
        } else {
            let mut spec = spec.ok_or_else(|| {
                SwarmError::InvalidArgument("the update carries no service spec".into())
            })?;
            validate(&spec)?;
            if spec.name != current.spec.name {
                return Err(SwarmError::InvalidArgument(
                    "rpc error: code = Unimplemented desc = renaming services is not supported"
                        .into(),
                ));
            }
            if mode_kind(&spec) != mode_kind(&current.spec) {
                return Err(SwarmError::InvalidArgument(
                    "rpc error: code = Unimplemented desc = service mode change is not allowed"
                        .into(),
                ));
            }
            if !opts.no_resolve_image {
                if spec.task_template.container_spec.image
                    == unpinned(&current.spec.task_template.container_spec.image)
                {
                    // Same image as given before: keep the pin (Docker re-resolves only
                    // a changed reference unless asked to).
                    spec.task_template.container_spec.image =
                        current.spec.task_template.container_spec.image.clone();
                } else {
                    let auth = opts
                        .registry_auth
                        .as_deref()
                        .or(Some(current.registry_auth.as_str()).filter(|a| !a.is_empty()));
                    self.pin_image(&mut spec, auth, &mut warnings).await;
                }
            }
            if spec == current.spec {
                return Ok(warnings);
            }
            svc.previous_spec = Some(current.spec.clone());
            let template_changed = spec.task_template != current.spec.task_template;
            svc.spec = spec;
            // Only a new task template rolls tasks; a scale keeps the last status (as
            // Docker's updater, which does not run for a replica count).
            if template_changed {
                svc.update_status = Some(UpdateStatus {
                    state: UpdateState::Updating,
                    started_at: Some(now),
                    completed_at: None,
                    message: "update in progress".into(),
                });
            }
        }
        svc.spec_version += 1;
        if let Some(auth) = &opts.registry_auth {
            svc.registry_auth = auth.clone();
        }
        if svc.spec.mode.is_job() {
            let js = svc.job_status.get_or_insert_with(Default::default);
            js.job_iteration += 1;
            js.last_execution = Some(now);
            // A job runs again rather than rolling.
            svc.update_status = None;
        }
        self.propose(Proposal {
            actions: vec![Action::Update(Object::Service(svc))],
            at: now,
        })
        .await?;
        Ok(warnings)
    }

    /// Removes a service; its tasks are shut down and reaped by the orchestrator.
    pub async fn remove_service(&self, key: &str) -> Result<(), SwarmError> {
        let svc = self.service(key)?;
        self.propose(Proposal {
            actions: vec![Action::Delete {
                kind: shoal_store::model::ObjectKind::Service,
                id: svc.id,
                version: None,
            }],
            at: Utc::now(),
        })
        .await?;
        Ok(())
    }

    /// Freezes (or thaws) every task of a service (`service pause|unpause`).
    pub async fn pause_service(&self, key: &str, paused: bool) -> Result<(), SwarmError> {
        let svc = self.service(key)?;
        self.modify::<Service, _>(&svc.id, move |s| {
            s.paused = paused;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// A service by ID, name, or unique ID prefix (Docker's lookup order).
    pub fn service(&self, key: &str) -> Result<Service, SwarmError> {
        let services = self.store().list::<Service>()?;
        if let Some(s) = services.iter().find(|s| s.id == key) {
            return Ok(s.clone());
        }
        if let Some(s) = services.iter().find(|s| s.spec.name == key) {
            return Ok(s.clone());
        }
        let hits: Vec<&Service> = services.iter().filter(|s| s.id.starts_with(key)).collect();
        match hits.as_slice() {
            [one] if !key.is_empty() => Ok((*one).clone()),
            [] | [_] => Err(SwarmError::NotFound(format!("service {key} not found"))),
            _ => Err(SwarmError::InvalidArgument(format!(
                "service {key} is ambiguous ({} matches found)",
                hits.len()
            ))),
        }
    }

    /// Every service with its task counts.
    pub fn services(&self) -> Result<Vec<ServiceView>, SwarmError> {
        let tasks = self.store().list::<Task>()?;
        let nodes = self.store().list::<shoal_store::model::Node>()?;
        let mut out: Vec<ServiceView> = self
            .store()
            .list::<Service>()?
            .into_iter()
            .map(|s| {
                let mine: Vec<&Task> = tasks.iter().filter(|t| t.service_id == s.id).collect();
                let running = mine
                    .iter()
                    .filter(|t| {
                        t.status.state == TaskState::Running
                            && t.desired_state <= TaskState::Running
                    })
                    .count() as u64;
                let iteration = s.job_status.as_ref().map(|j| j.job_iteration);
                let completed = mine
                    .iter()
                    .filter(|t| {
                        t.status.state == TaskState::Complete
                            && (iteration.is_none() || t.job_iteration == iteration)
                    })
                    .count() as u64;
                let desired = match s.spec.mode.get() {
                    Mode::Replicated { replicas } => replicas,
                    Mode::ReplicatedJob {
                        max_concurrent,
                        total_completions,
                    } => max_concurrent.min(total_completions.saturating_sub(completed)),
                    Mode::Global | Mode::GlobalJob => mine
                        .iter()
                        .filter(|t| t.desired_state <= TaskState::Running)
                        .filter(|t| {
                            nodes.iter().any(|n| {
                                n.id == t.node_id
                                    && n.status.state != shoal_store::model::NodeState::Down
                            })
                        })
                        .count() as u64,
                };
                ServiceView {
                    service: s,
                    running,
                    desired,
                    completed,
                }
            })
            .collect();
        out.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
        Ok(out)
    }

    /// Every task.
    pub fn tasks(&self) -> Result<Vec<Task>, SwarmError> {
        Ok(self.store().list::<Task>()?)
    }

    /// Pins the image to a digest, as Docker resolves tags: from this manager's image store
    /// when it has the image (the registry digest it was pulled by, else its manifest
    /// digest: an imported image has no registry to ask), else from the registry (with the
    /// service's credentials). When neither answers in time, the reference stays as given
    /// with Docker's warning.
    async fn pin_image(
        &self,
        spec: &mut ServiceSpec,
        registry_auth: Option<&str>,
        warnings: &mut Vec<String>,
    ) {
        let image = spec.task_template.container_spec.image.clone();
        if image.contains('@') {
            return;
        }
        let Some(member) = self.member() else { return };
        let Ok(full) = shoal_image::reference::normalize(&image) else {
            return;
        };
        // Docker's form: the familiar name with its tag, then the digest.
        let named = shoal_image::reference::familiar(&full);
        let repo = full.split_once(':').map_or(full.as_str(), |(r, _)| r);
        let local = member.engine.images.get(&image).ok().and_then(|rec| {
            rec.repo_digests
                .iter()
                .find_map(|d| {
                    d.split_once('@')
                        .filter(|(r, _)| *r == repo)
                        .map(|(_, d)| d.to_owned())
                })
                .or_else(|| (!rec.manifest_digest.is_empty()).then(|| rec.manifest_digest.clone()))
        });
        let digest = match local {
            Some(d) => Some(d),
            None => {
                let creds = registry_auth.and_then(shoal_image::Credentials::from_registry_auth);
                match tokio::time::timeout(
                    PIN_TIMEOUT,
                    member.engine.images.resolve_digest(&image, creds),
                )
                .await
                {
                    Ok(Ok(d)) => Some(d),
                    Ok(Err(e)) => {
                        tracing::debug!(%image, error = %e, "cannot resolve the image digest");
                        None
                    }
                    Err(_) => None,
                }
            }
        };
        match digest {
            Some(d) => spec.task_template.container_spec.image = format!("{named}@{d}"),
            None => warnings.push(format!(
                "image {image} could not be accessed on a registry to record\nits digest. Each node will access {image} independently,\npossibly leading to different nodes running different\nversions of the image.\n"
            )),
        }
    }
}

/// How long a manager waits for a registry to name an image's digest.
const PIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The image reference without a `@sha256:` pin.
pub fn unpinned(image: &str) -> &str {
    image.split_once('@').map_or(image, |(n, _)| n)
}

fn mode_kind(spec: &ServiceSpec) -> u8 {
    match spec.mode.get() {
        Mode::Replicated { .. } => 0,
        Mode::Global => 1,
        Mode::ReplicatedJob { .. } => 2,
        Mode::GlobalJob => 3,
    }
}

fn unused_name(mgr: &Manager) -> Result<String, SwarmError> {
    let taken: Vec<String> = mgr
        .store()
        .list::<Service>()?
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    for retry in 0..100 {
        let n = shoal_runtime::names::random(retry);
        if !taken.contains(&n) {
            return Ok(n);
        }
    }
    Err(SwarmError::Internal("no free service name".into()))
}

/// Checks a spec as SwarmKit's `validateServiceSpec` does; errors read as Docker's.
pub fn validate(spec: &ServiceSpec) -> Result<(), SwarmError> {
    let bad = |m: String| {
        Err(SwarmError::InvalidArgument(format!(
            "rpc error: code = InvalidArgument desc = {m}"
        )))
    };
    if !valid_name(&spec.name) {
        return bad(format!(
            "name must be valid as a DNS name component: {:?}",
            spec.name
        ));
    }
    let modes = [
        spec.mode.replicated.is_some(),
        spec.mode.global.is_some(),
        spec.mode.replicated_job.is_some(),
        spec.mode.global_job.is_some(),
    ];
    if modes.iter().filter(|m| **m).count() > 1 {
        return bad("only one service mode may be set".into());
    }
    let c = &spec.task_template.container_spec;
    if c.image.is_empty() {
        return bad("ContainerSpec: image reference must be provided".into());
    }
    if let Some(p) = &spec.task_template.restart_policy {
        if !matches!(p.condition.as_str(), "" | "none" | "on-failure" | "any") {
            return bad(format!("invalid RestartCondition: {:?}", p.condition));
        }
        if p.delay.is_some_and(|d| d < 0) || p.window < 0 {
            return bad("TaskSpec: restart-delay and restart-window cannot be negative".into());
        }
    }
    for (what, u) in [
        ("UpdateConfig", &spec.update_config),
        ("RollbackConfig", &spec.rollback_config),
    ] {
        let Some(u) = u else { continue };
        if !matches!(
            u.failure_action.as_str(),
            "" | "pause" | "continue" | "rollback"
        ) {
            return bad(format!(
                "{what}: invalid FailureAction {:?}",
                u.failure_action
            ));
        }
        if what == "RollbackConfig" && u.failure_action == "rollback" {
            return bad("RollbackConfig: FailureAction cannot be rollback".into());
        }
        if !matches!(u.order.as_str(), "" | "stop-first" | "start-first") {
            return bad(format!("{what}: invalid Order {:?}", u.order));
        }
        if !(0.0..=1.0).contains(&u.max_failure_ratio) {
            return bad(format!(
                "{what}: max-failure-ratio must be between 0 and 1, got {}",
                u.max_failure_ratio
            ));
        }
        if u.delay < 0 || u.monitor < 0 {
            return bad(format!("{what}: delay and monitor cannot be negative"));
        }
    }
    if let Some(p) = &spec.task_template.placement {
        constraint::parse_all(&p.constraints)
            .map_err(|e| SwarmError::InvalidArgument(e.to_string()))?;
        for pref in &p.preferences {
            let d = &pref.spread.spread_descriptor;
            if !(d.starts_with("node.labels.") || d.starts_with("engine.labels."))
                || d.ends_with('.')
            {
                return bad(format!(
                    "invalid placement preference spread descriptor {d:?}"
                ));
            }
        }
    }
    for m in &c.mounts {
        if !m.target.starts_with('/') {
            return bad(format!(
                "invalid mount target, must be an absolute path: {}",
                m.target
            ));
        }
        match m.kind.as_str() {
            "bind" => {
                if !m.source.starts_with('/') {
                    return bad(format!(
                        "invalid bind mount source, must be an absolute path: {}",
                        m.source
                    ));
                }
            }
            "volume" => {}
            "tmpfs" => {
                if !m.source.is_empty() {
                    return bad("invalid tmpfs source, source must be empty".into());
                }
            }
            other => return bad(format!("invalid mount type: {other:?}")),
        }
    }
    Ok(())
}

/// SwarmKit's name rule: up to 63 characters, letters, digits, `-` and `_`, starting and
/// ending with a letter or digit.
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::model::{Mount, UpdateConfig};

    fn spec() -> ServiceSpec {
        let mut s = ServiceSpec {
            name: "web".into(),
            ..Default::default()
        };
        s.task_template.container_spec.image = "busybox".into();
        s
    }

    #[test]
    fn valid_specs_pass_and_bad_ones_name_the_problem() {
        assert!(validate(&spec()).is_ok());
        let mut s = spec();
        s.name = "bad name".into();
        assert!(validate(&s).unwrap_err().to_string().contains("DNS name"));
        let mut s = spec();
        s.task_template.container_spec.image.clear();
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("image reference")
        );
        let mut s = spec();
        s.update_config = Some(UpdateConfig {
            failure_action: "explode".into(),
            ..Default::default()
        });
        assert!(validate(&s).unwrap_err().to_string().contains("explode"));
        let mut s = spec();
        s.task_template.container_spec.mounts.push(Mount {
            kind: "bind".into(),
            source: "rel".into(),
            target: "/x".into(),
            ..Default::default()
        });
        assert!(validate(&s).unwrap_err().to_string().contains("absolute"));
        let mut s = spec();
        s.mode.global = Some(Default::default());
        s.mode.replicated = Some(Default::default());
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("one service mode")
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("web"));
        assert!(valid_name("my_web-1"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("web."));
        assert!(!valid_name(&"a".repeat(64)));
        assert_eq!(unpinned("busybox:latest@sha256:ab"), "busybox:latest");
        assert_eq!(unpinned("busybox"), "busybox");
    }
}
