//! What a Raft entry carries, and the deterministic logic that applies it.
//!
//! [`apply`] is pure: the current objects, a [`Proposal`] and the entry's log index in; the
//! outcome and the resulting changes (as [`Event`]s) out. Every manager applies the same
//! entries in the same order and gets the same objects: versions come from the log index,
//! timestamps from the proposer's clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Cluster, Config, Meta, Network, Node, ObjectKind, Secret, Service, Task, Volume,
};

/// Any stored object. Encoded as `{"kind": "node", "object": {...}}`.
// A service (two specs) is ~2 KB inline; objects are built, applied and dropped one
// proposal at a time, so boxing would only add an allocation and a layer to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "object", rename_all = "lowercase")]
pub enum Object {
    Cluster(Cluster),
    Node(Node),
    Service(Service),
    Task(Task),
    Network(Network),
    Secret(Secret),
    Config(Config),
    Volume(Volume),
}

macro_rules! each_object {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Object::Cluster($o) => $e,
            Object::Node($o) => $e,
            Object::Service($o) => $e,
            Object::Task($o) => $e,
            Object::Network($o) => $e,
            Object::Secret($o) => $e,
            Object::Config($o) => $e,
            Object::Volume($o) => $e,
        }
    };
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Cluster(_) => ObjectKind::Cluster,
            Object::Node(_) => ObjectKind::Node,
            Object::Service(_) => ObjectKind::Service,
            Object::Task(_) => ObjectKind::Task,
            Object::Network(_) => ObjectKind::Network,
            Object::Secret(_) => ObjectKind::Secret,
            Object::Config(_) => ObjectKind::Config,
            Object::Volume(_) => ObjectKind::Volume,
        }
    }

    /// The object's ID.
    pub fn id(&self) -> &str {
        each_object!(self, o => &o.id)
    }

    /// The object's bookkeeping.
    pub fn meta(&self) -> &Meta {
        each_object!(self, o => &o.meta)
    }

    /// The object's bookkeeping, mutable.
    pub fn meta_mut(&mut self) -> &mut Meta {
        each_object!(self, o => &mut o.meta)
    }
}

/// One change inside a proposal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refused (`Exists`) if an object of that kind and ID exists.
    Create(Object),
    /// `object.meta.version` must equal the stored version (optimistic concurrency, as
    /// SwarmKit's store): else `Conflict`.
    Update(Object),
    /// Refused (`NotFound`) if missing; with `version`, refused (`Conflict`) unless it
    /// matches.
    Delete {
        kind: ObjectKind,
        id: String,
        #[serde(default)]
        version: Option<u64>,
    },
}

/// What a Raft entry carries: actions applied atomically, all or none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Proposal {
    pub actions: Vec<Action>,
    /// Set by the proposer: `created_at`/`updated_at` come from here, so apply is
    /// deterministic.
    pub at: DateTime<Utc>,
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// Every action applied; objects written now carry `version == index`.
    Applied { index: u64 },
    /// An action carried a version that is not the stored one; nothing applied.
    Conflict {
        kind: ObjectKind,
        id: String,
        /// The version the proposer expected.
        expected: u64,
        /// The stored version (None if the object is gone).
        actual: Option<u64>,
    },
    /// A create hit an existing object; nothing applied.
    Exists { kind: ObjectKind, id: String },
    /// An update or delete of a missing object; nothing applied.
    NotFound { kind: ObjectKind, id: String },
}

impl ApplyOutcome {
    /// True for [`ApplyOutcome::Applied`].
    pub fn is_applied(&self) -> bool {
        matches!(self, ApplyOutcome::Applied { .. })
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    Created,
    Updated,
    Deleted,
}

/// A change to one object, sent to watchers after it is applied (and persisted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: ObjectKind,
    pub id: String,
    pub action: EventAction,
    /// The log index of the write (for `Deleted`, the index of the delete).
    pub version: u64,
    /// The object as written; for `Deleted`, as it was before.
    pub object: Object,
}

/// Read access to the current objects, for [`apply`].
pub trait ObjectSource {
    /// The stored object of `kind` with `id`.
    fn lookup(&self, kind: ObjectKind, id: &str) -> Option<&Object>;
}

impl ObjectSource for BTreeMap<ObjectKind, BTreeMap<String, Object>> {
    fn lookup(&self, kind: ObjectKind, id: &str) -> Option<&Object> {
        self.get(&kind).and_then(|t| t.get(id))
    }
}

/// Applies `proposal`, the entry at log `index`, to the objects `current` holds.
///
/// Returns the outcome and, when applied, the changes in order (the caller persists them and
/// forwards them to watchers). When any action is refused, the outcome says why and there
/// are no changes: a proposal applies atomically.
pub fn apply(
    current: &dyn ObjectSource,
    proposal: &Proposal,
    index: u64,
) -> (ApplyOutcome, Vec<Event>) {
    // Changes made by earlier actions of this proposal (None = deleted).
    let mut overlay: BTreeMap<(ObjectKind, String), Option<Object>> = BTreeMap::new();
    let mut events = Vec::with_capacity(proposal.actions.len());
    for action in &proposal.actions {
        let (kind, id) = match action {
            Action::Create(o) | Action::Update(o) => (o.kind(), o.id().to_owned()),
            Action::Delete { kind, id, .. } => (*kind, id.clone()),
        };
        let existing: Option<&Object> = match overlay.get(&(kind, id.clone())) {
            Some(o) => o.as_ref(),
            None => current.lookup(kind, &id),
        };
        let event = match action {
            Action::Create(o) => {
                if existing.is_some() {
                    return (ApplyOutcome::Exists { kind, id }, Vec::new());
                }
                let mut o = o.clone();
                let m = o.meta_mut();
                m.version = index;
                m.created_at = proposal.at;
                m.updated_at = proposal.at;
                Event {
                    kind,
                    id,
                    action: EventAction::Created,
                    version: index,
                    object: o,
                }
            }
            Action::Update(o) => {
                let Some(stored) = existing else {
                    return (ApplyOutcome::NotFound { kind, id }, Vec::new());
                };
                let actual = stored.meta().version;
                if o.meta().version != actual {
                    return (
                        ApplyOutcome::Conflict {
                            kind,
                            id,
                            expected: o.meta().version,
                            actual: Some(actual),
                        },
                        Vec::new(),
                    );
                }
                let created_at = stored.meta().created_at;
                let mut o = o.clone();
                let m = o.meta_mut();
                m.version = index;
                m.created_at = created_at;
                m.updated_at = proposal.at;
                Event {
                    kind,
                    id,
                    action: EventAction::Updated,
                    version: index,
                    object: o,
                }
            }
            Action::Delete { version, .. } => {
                let Some(stored) = existing else {
                    return (ApplyOutcome::NotFound { kind, id }, Vec::new());
                };
                if let Some(expected) = *version
                    && expected != stored.meta().version
                {
                    return (
                        ApplyOutcome::Conflict {
                            kind,
                            id,
                            expected,
                            actual: Some(stored.meta().version),
                        },
                        Vec::new(),
                    );
                }
                Event {
                    kind,
                    id,
                    action: EventAction::Deleted,
                    version: index,
                    object: stored.clone(),
                }
            }
        };
        let after = match event.action {
            EventAction::Deleted => None,
            _ => Some(event.object.clone()),
        };
        overlay.insert((kind, event.id.clone()), after);
        events.push(event);
    }
    (ApplyOutcome::Applied { index }, events)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    type Objects = BTreeMap<ObjectKind, BTreeMap<String, Object>>;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap()
    }

    fn node(id: &str, version: u64) -> Object {
        Object::Node(Node {
            id: id.into(),
            meta: Meta {
                version,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn service(id: &str, name: &str, version: u64) -> Object {
        let mut s = Service {
            id: id.into(),
            ..Default::default()
        };
        s.spec.name = name.into();
        s.meta.version = version;
        Object::Service(s)
    }

    /// Applies like the state machine does: changes land in `objects`.
    fn commit(objects: &mut Objects, events: &[Event]) {
        for e in events {
            let t = objects.entry(e.kind).or_default();
            match e.action {
                EventAction::Deleted => {
                    t.remove(&e.id);
                }
                _ => {
                    t.insert(e.id.clone(), e.object.clone());
                }
            }
        }
    }

    fn p(actions: Vec<Action>, at: i64) -> Proposal {
        Proposal { actions, at: t(at) }
    }

    #[test]
    fn create_sets_version_and_times_from_the_proposal() {
        let objects = Objects::new();
        let (out, events) = apply(&objects, &p(vec![Action::Create(node("n1", 0))], 100), 7);
        assert_eq!(out, ApplyOutcome::Applied { index: 7 });
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, EventAction::Created);
        assert_eq!(events[0].version, 7);
        assert_eq!(
            events[0].object.meta(),
            &Meta {
                version: 7,
                created_at: t(100),
                updated_at: t(100)
            }
        );
    }

    #[test]
    fn create_of_existing_is_refused() {
        let mut objects = Objects::new();
        let (_, ev) = apply(&objects, &p(vec![Action::Create(node("n1", 0))], 1), 1);
        commit(&mut objects, &ev);
        let (out, events) = apply(&objects, &p(vec![Action::Create(node("n1", 0))], 2), 2);
        assert_eq!(
            out,
            ApplyOutcome::Exists {
                kind: ObjectKind::Node,
                id: "n1".into()
            }
        );
        assert!(events.is_empty());
        // Same ID, other kind: fine.
        let (out, _) = apply(
            &objects,
            &p(vec![Action::Create(service("n1", "s", 0))], 3),
            3,
        );
        assert_eq!(out, ApplyOutcome::Applied { index: 3 });
    }

    #[test]
    fn update_with_current_version_keeps_created_at() {
        let mut objects = Objects::new();
        let (_, ev) = apply(
            &objects,
            &p(vec![Action::Create(service("s1", "a", 0))], 10),
            4,
        );
        commit(&mut objects, &ev);
        let (out, ev) = apply(
            &objects,
            &p(vec![Action::Update(service("s1", "b", 4))], 20),
            9,
        );
        assert_eq!(out, ApplyOutcome::Applied { index: 9 });
        assert_eq!(ev[0].action, EventAction::Updated);
        assert_eq!(
            ev[0].object.meta(),
            &Meta {
                version: 9,
                created_at: t(10),
                updated_at: t(20)
            }
        );
        match &ev[0].object {
            Object::Service(s) => assert_eq!(s.spec.name, "b"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn update_with_stale_version_is_a_conflict() {
        let mut objects = Objects::new();
        let (_, ev) = apply(
            &objects,
            &p(vec![Action::Create(service("s1", "a", 0))], 10),
            4,
        );
        commit(&mut objects, &ev);
        let (_, ev) = apply(
            &objects,
            &p(vec![Action::Update(service("s1", "b", 4))], 20),
            9,
        );
        commit(&mut objects, &ev);
        // A second writer still holding version 4.
        let (out, ev) = apply(
            &objects,
            &p(vec![Action::Update(service("s1", "c", 4))], 30),
            12,
        );
        assert_eq!(
            out,
            ApplyOutcome::Conflict {
                kind: ObjectKind::Service,
                id: "s1".into(),
                expected: 4,
                actual: Some(9)
            }
        );
        assert!(ev.is_empty());
    }

    #[test]
    fn update_and_delete_of_missing_are_not_found() {
        let objects = Objects::new();
        let (out, _) = apply(&objects, &p(vec![Action::Update(node("x", 1))], 1), 2);
        assert_eq!(
            out,
            ApplyOutcome::NotFound {
                kind: ObjectKind::Node,
                id: "x".into()
            }
        );
        let (out, _) = apply(
            &objects,
            &p(
                vec![Action::Delete {
                    kind: ObjectKind::Task,
                    id: "t".into(),
                    version: None,
                }],
                1,
            ),
            3,
        );
        assert_eq!(
            out,
            ApplyOutcome::NotFound {
                kind: ObjectKind::Task,
                id: "t".into()
            }
        );
    }

    #[test]
    fn delete_checks_an_optional_version() {
        let mut objects = Objects::new();
        let (_, ev) = apply(&objects, &p(vec![Action::Create(node("n1", 0))], 1), 5);
        commit(&mut objects, &ev);
        let del = |version| Action::Delete {
            kind: ObjectKind::Node,
            id: "n1".into(),
            version,
        };
        let (out, _) = apply(&objects, &p(vec![del(Some(4))], 2), 6);
        assert_eq!(
            out,
            ApplyOutcome::Conflict {
                kind: ObjectKind::Node,
                id: "n1".into(),
                expected: 4,
                actual: Some(5)
            }
        );
        let (out, ev) = apply(&objects, &p(vec![del(Some(5))], 2), 7);
        assert_eq!(out, ApplyOutcome::Applied { index: 7 });
        assert_eq!(ev[0].action, EventAction::Deleted);
        assert_eq!(ev[0].version, 7);
        // The event carries the object as it was.
        assert_eq!(ev[0].object.meta().version, 5);
        commit(&mut objects, &ev);
        assert_eq!(objects.lookup(ObjectKind::Node, "n1"), None);
        // Unversioned delete of an existing object.
        let (_, ev) = apply(&objects, &p(vec![Action::Create(node("n2", 0))], 1), 8);
        commit(&mut objects, &ev);
        let (out, _) = apply(
            &objects,
            &p(
                vec![Action::Delete {
                    kind: ObjectKind::Node,
                    id: "n2".into(),
                    version: None,
                }],
                2,
            ),
            9,
        );
        assert_eq!(out, ApplyOutcome::Applied { index: 9 });
    }

    #[test]
    fn a_failing_action_rolls_back_the_whole_proposal() {
        let mut objects = Objects::new();
        let (_, ev) = apply(&objects, &p(vec![Action::Create(node("n1", 0))], 1), 1);
        commit(&mut objects, &ev);
        let before = objects.clone();
        let (out, ev) = apply(
            &objects,
            &p(
                vec![
                    Action::Create(service("s1", "a", 0)),
                    Action::Update(node("n1", 1)),
                    Action::Create(node("n1", 0)), // exists: refuses everything
                ],
                5,
            ),
            2,
        );
        assert_eq!(
            out,
            ApplyOutcome::Exists {
                kind: ObjectKind::Node,
                id: "n1".into()
            }
        );
        assert!(ev.is_empty());
        commit(&mut objects, &ev);
        assert_eq!(objects, before);
    }

    #[test]
    fn actions_see_earlier_actions_of_the_same_proposal() {
        let objects = Objects::new();
        // Create then update (with the version the create gives) then delete another.
        let (out, ev) = apply(
            &objects,
            &p(
                vec![
                    Action::Create(service("s1", "a", 0)),
                    Action::Update(service("s1", "b", 3)),
                    Action::Create(node("n1", 0)),
                    Action::Delete {
                        kind: ObjectKind::Node,
                        id: "n1".into(),
                        version: Some(3),
                    },
                ],
                5,
            ),
            3,
        );
        assert_eq!(out, ApplyOutcome::Applied { index: 3 });
        let actions: Vec<_> = ev
            .iter()
            .map(|e| (e.kind, e.id.as_str(), e.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                (ObjectKind::Service, "s1", EventAction::Created),
                (ObjectKind::Service, "s1", EventAction::Updated),
                (ObjectKind::Node, "n1", EventAction::Created),
                (ObjectKind::Node, "n1", EventAction::Deleted),
            ]
        );
        // Creating twice in one proposal is refused.
        let (out, ev) = apply(
            &objects,
            &p(
                vec![Action::Create(node("n9", 0)), Action::Create(node("n9", 0))],
                5,
            ),
            4,
        );
        assert_eq!(
            out,
            ApplyOutcome::Exists {
                kind: ObjectKind::Node,
                id: "n9".into()
            }
        );
        assert!(ev.is_empty());
    }

    #[test]
    fn apply_is_deterministic() {
        let mut a = Objects::new();
        let mut b = Objects::new();
        let props = [
            p(
                vec![
                    Action::Create(service("s1", "a", 0)),
                    Action::Create(node("n", 0)),
                ],
                1,
            ),
            p(vec![Action::Update(service("s1", "b", 1))], 2),
            p(vec![Action::Update(service("s1", "c", 1))], 3), // conflict
        ];
        for (i, prop) in props.iter().enumerate() {
            let (oa, ea) = apply(&a, prop, i as u64 + 1);
            let (ob, eb) = apply(&b, prop, i as u64 + 1);
            assert_eq!(oa, ob);
            assert_eq!(ea, eb);
            commit(&mut a, &ea);
            commit(&mut b, &eb);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn encodings() {
        let prop = p(
            vec![
                Action::Create(node("n1", 0)),
                Action::Delete {
                    kind: ObjectKind::Secret,
                    id: "x".into(),
                    version: Some(3),
                },
            ],
            0,
        );
        let v = serde_json::to_value(&prop).unwrap();
        assert_eq!(v["actions"][0]["create"]["kind"], "node");
        assert_eq!(v["actions"][0]["create"]["object"]["id"], "n1");
        assert_eq!(v["actions"][1]["delete"]["kind"], "secret");
        let back: Proposal = serde_json::from_value(v).unwrap();
        assert_eq!(back, prop);
        let out = ApplyOutcome::Conflict {
            kind: ObjectKind::Node,
            id: "n".into(),
            expected: 1,
            actual: Some(2),
        };
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["outcome"], "conflict");
        assert_eq!(serde_json::from_value::<ApplyOutcome>(v).unwrap(), out);
        // A delete without a version (older encoders) reads.
        let a: Action = serde_json::from_str(r#"{"delete":{"kind":"task","id":"t"}}"#).unwrap();
        assert_eq!(
            a,
            Action::Delete {
                kind: ObjectKind::Task,
                id: "t".into(),
                version: None
            }
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// An action on a small ID space, so creates, updates and deletes collide.
        fn action() -> impl Strategy<Value = Action> {
            let id = prop::sample::select(vec!["a", "b", "c"]);
            let version = 0u64..6;
            prop_oneof![
                id.clone().prop_map(|i| Action::Create(node(i, 0))),
                (id.clone(), version.clone()).prop_map(|(i, v)| Action::Update(node(i, v))),
                (id, prop::option::of(version)).prop_map(|(i, v)| Action::Delete {
                    kind: ObjectKind::Node,
                    id: i.to_owned(),
                    version: v,
                }),
            ]
        }

        proptest! {
            #[test]
            fn proposals_apply_all_or_nothing(batches in prop::collection::vec(prop::collection::vec(action(), 1..4), 1..12)) {
                let mut objects = Objects::new();
                for (i, actions) in batches.into_iter().enumerate() {
                    let index = i as u64 + 1;
                    let n = actions.len();
                    let before = objects.clone();
                    let (out, events) = apply(&objects, &p(actions, index as i64), index);
                    if out.is_applied() {
                        prop_assert_eq!(events.len(), n);
                        commit(&mut objects, &events);
                        // Whatever this entry wrote carries its index.
                        for e in &events {
                            prop_assert_eq!(e.version, index);
                            if e.action != EventAction::Deleted {
                                let stored = objects.lookup(ObjectKind::Node, &e.id);
                                if let Some(o) = stored {
                                    prop_assert_eq!(o.meta().version, index);
                                }
                            }
                        }
                    } else {
                        prop_assert!(events.is_empty());
                        prop_assert_eq!(&objects, &before);
                    }
                    // Versions never exceed the index that wrote them.
                    for o in objects.values().flat_map(|t| t.values()) {
                        prop_assert!(o.meta().version <= index);
                    }
                }
            }
        }
    }
}
