//! The entities of one decision with every entity's ancestors already closed, so that Cedar need not compute
//! the transitive closure of the hierarchy again on each decision.
//!
//! Cedar's public constructors of [`Entities`] always compute the closure, with an SCC pass that hashes and
//! clones every entity uid several times: about 40% of a decision Lakegate could not answer from its cache. Yet
//! the closure is mostly known before the request: the static entities of `entities.json` were closed at load,
//! the action chains come closed from the schema, and what a request builds itself (the user and the resource
//! with its parents) is a handful of entities whose parents are each other or static entities. This module closes
//! those few against the static closure and hands the whole to Cedar's core as already closed.
//!
//! That shortcut is only right when no static entity's ancestors pass through an entity a request builds (a
//! request's own entity replaces a static one of the same uid, and with it that entity's parents): such a policy
//! directory is detected at load and decided with Cedar's own closure ([`Hierarchy::closes_requests`]).
//!
//! Cedar's core crate is used here for what its public crate does not offer: its `Entities::from_entities` with
//! `TCComputation::AssumeAlreadyComputed` is the one way to hand over closed entities, and `cedar-policy`
//! converts the result into its public type. Entities whose attributes and tags are strings are built there too
//! ([`string_entity`]): `cedar-policy`'s constructor evaluates each value as an expression. (Its one other use
//! is reading whether the schema enumerates ids, in `store.rs`.) Both crates are pinned to the same version in
//! the workspace.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Entities, Entity, EntityUid};
use cedar_policy_core::ast::{Entity as CoreEntity, EntityUID, PartialValue};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

use super::PolicyError;

/// The entity types a request builds for itself: the user ([`super::user_entity`]) and a resource with its
/// parents ([`super::Resource::entities`]).
const REQUEST_BUILT: [&str; 9] =
    ["User", "Bucket", "Prefix", "Object", "Database", "Table", "Column", "Role", "Audience"];

/// An entity a request builds for itself (the user, the resource and its parents), in Cedar's core type: it is
/// moved into the request's entities with its ancestors added in place, where a `cedar_policy::Entity` could only
/// be cloned out of its wrapper.
pub(super) type OwnEntity = CoreEntity;

/// An entity without attributes in `parents`.
pub(super) fn plain_entity(uid: EntityUid, parents: impl IntoIterator<Item = EntityUid>) -> OwnEntity {
    string_entity(uid, [], parents, [])
}

/// An entity whose attributes and tags are strings, as `Entity::new_with_tags` would build it from
/// `RestrictedExpression::new_string`s, without interpreting each string as an expression.
pub(super) fn string_entity<'a>(
    uid: EntityUid,
    attrs: impl IntoIterator<Item = (&'a str, &'a str)>,
    parents: impl IntoIterator<Item = EntityUid>,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> OwnEntity {
    let value = |(k, v): (&str, &str)| (k.into(), PartialValue::from(v));
    CoreEntity::new_with_attr_partial_value(
        uid.into(),
        attrs.into_iter().map(value),
        HashSet::new(),
        parents.into_iter().map(EntityUID::from).collect(),
        tags.into_iter().map(value),
    )
}

/// The closed ancestors of each static entity, read once at load.
#[derive(Debug, Default)]
pub(super) struct Hierarchy {
    ancestors: HashMap<EntityUID, HashSet<EntityUID>>,
    /// False when a static entity has an ancestor of a type a request builds, whose parents the request's own
    /// entity may change: then only Cedar's closure over the whole request is right.
    closes_requests: bool,
}

/// Where one own entity's ancestors come from: own entities closed before it, and static entities' closures.
struct Sources<'a> {
    own: Vec<usize>,
    statics: Vec<&'a HashSet<EntityUID>>,
}

impl Hierarchy {
    /// `statics` as loaded (closed by Cedar at load).
    pub(super) fn of(statics: &[Entity]) -> Self {
        let ancestors: HashMap<EntityUID, HashSet<EntityUID>> = statics
            .iter()
            .map(|e| {
                let e: &CoreEntity = e.as_ref();
                (e.uid().clone(), e.ancestors().cloned().collect())
            })
            .collect();
        let closes_requests = ancestors
            .values()
            .flatten()
            .all(|a| !REQUEST_BUILT.contains(&AsRef::<str>::as_ref(a.entity_type().name().basename_as_ref())));
        Hierarchy { ancestors, closes_requests }
    }

    /// Whether [`Hierarchy::entities`] may be used for this store's requests.
    pub(super) fn closes_requests(&self) -> bool {
        self.closes_requests
    }

    /// The entities of a request: its `own` (the first of any two with one uid), the `statics` whose uid is not
    /// one of its own (an own entity replaces a static one, a user given groups in entities.json say), and the
    /// action chain, with the own entities' ancestors closed. A cycle among the own entities is refused, as Cedar
    /// refuses it.
    pub(super) fn entities<'a>(
        &self,
        mut own: Vec<OwnEntity>,
        statics: &'a [Entity],
        actions: impl Iterator<Item = &'a Entity>,
    ) -> Result<Entities, PolicyError> {
        // Read what each own entity's ancestors come from, in an order that puts an entity after its own
        // parents; then add them in that order, each entity reading the already closed ancestors of its parents.
        let (order, sources, others) = {
            let mut position: HashMap<&EntityUID, usize> = HashMap::with_capacity(own.len());
            for (i, entity) in own.iter().enumerate() {
                position.entry(entity.uid()).or_insert(i);
            }
            let mut walk = Walk { own: &own, position: &position, sources: Vec::new(), order: Vec::new() };
            walk.sources.resize_with(own.len(), || None);
            let mut on_path = vec![false; own.len()];
            for (i, entity) in own.iter().enumerate() {
                if position.get(entity.uid()) == Some(&i) {
                    walk.visit(i, &self.ancestors, &mut on_path)?;
                }
            }
            let statics = statics.iter().map(AsRef::<CoreEntity>::as_ref).filter(|e| !position.contains_key(e.uid()));
            let others: Vec<CoreEntity> = statics.chain(actions.map(AsRef::as_ref)).cloned().collect();
            (walk.order, walk.sources, others)
        };
        let mut inherited = Vec::new();
        for &i in &order {
            let Some(Some(from)) = sources.get(i) else { continue };
            inherited.clear();
            for &j in &from.own {
                inherited.extend(own[j].ancestors().cloned());
            }
            inherited.extend(from.statics.iter().flat_map(|s| s.iter().cloned()));
            let entity = &mut own[i];
            for uid in inherited.drain(..) {
                entity.add_indirect_ancestor(uid);
            }
            if entity.is_descendant_of(entity.uid()) {
                return Err(PolicyError::Entities(format!("{} is its own ancestor", entity.uid())));
            }
        }
        let mut kept = sources.iter().map(Option::is_some);
        own.retain(|_| kept.next().unwrap_or(false));
        CoreEntities::from_entities(
            own.into_iter().chain(others),
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map(Entities::from)
        .map_err(|e| PolicyError::Entities(e.to_string()))
    }
}

/// A depth-first walk of the own entities' parents: where each one's ancestors come from, and an order in which
/// every own parent comes before its children. Duplicates of a uid have no sources and are left out.
struct Walk<'a, 'h> {
    own: &'a [OwnEntity],
    position: &'a HashMap<&'a EntityUID, usize>,
    sources: Vec<Option<Sources<'h>>>,
    order: Vec<usize>,
}

impl<'h> Walk<'_, 'h> {
    fn visit(
        &mut self,
        i: usize,
        statics: &'h HashMap<EntityUID, HashSet<EntityUID>>,
        on_path: &mut [bool],
    ) -> Result<(), PolicyError> {
        if matches!(self.sources.get(i), Some(Some(_))) {
            return Ok(());
        }
        let entity = &self.own[i];
        if on_path[i] {
            return Err(PolicyError::Entities(format!("{} is its own ancestor", entity.uid())));
        }
        on_path[i] = true;
        let mut from = Sources { own: Vec::new(), statics: Vec::new() };
        for parent in entity.parents() {
            if let Some(&j) = self.position.get(parent) {
                self.visit(j, statics, on_path)?;
                from.own.push(j);
            } else if let Some(theirs) = statics.get(parent) {
                from.statics.push(theirs);
            }
        }
        on_path[i] = false;
        self.sources[i] = Some(from);
        self.order.push(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use cedar_policy::EntityUid;

    use super::*;
    use crate::identity::Principal;
    use crate::policy::{Resource, catalog::Catalog, names, user_entity};

    fn uid(kind: &'static str, id: &str) -> EntityUid {
        names::uid(kind, id)
    }

    fn entity(kind: &'static str, id: &str, parents: &[(&'static str, &str)]) -> Entity {
        Entity::new_no_attrs(uid(kind, id), parents.iter().map(|(k, i)| uid(k, i)).collect())
    }

    /// Static entities as the store loads them: closed by Cedar.
    fn statics(entities: Vec<Entity>) -> Vec<Entity> {
        Entities::from_entities(entities, None).expect("statics").iter().cloned().collect()
    }

    fn ancestors(entities: &Entities, of: &EntityUid) -> BTreeSet<String> {
        entities.ancestors(of).into_iter().flatten().map(ToString::to_string).collect()
    }

    /// The request's own entities: a user in two groups, an object three prefixes deep.
    fn own() -> Vec<OwnEntity> {
        let alice = Principal {
            issuer: "test".into(),
            subject: "alice".into(),
            groups: vec!["analysts".into(), "auditors".into()],
            attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
            token_id: None,
            expires_at: i64::MAX,
            actors: Vec::new(),
        };
        let mut own = vec![user_entity(&alice)];
        own.extend(
            Resource::parse("s3://lake/sales/2024/q1/orders.parquet").expect("resource").entities(&Catalog::default()),
        );
        own
    }

    #[test]
    fn own_entities_closed_against_the_static_closure_are_what_cedar_closes() {
        // Group nesting three deep, a group no one is in, and a diamond.
        let statics = statics(vec![
            entity("Group", "analysts", &[("Group", "staff")]),
            entity("Group", "staff", &[("Group", "everyone")]),
            entity("Group", "auditors", &[("Group", "staff"), ("Group", "compliance")]),
            entity("Group", "compliance", &[("Group", "everyone")]),
            entity("Group", "everyone", &[]),
            entity("Group", "contractors", &[("Group", "everyone")]),
            // Replaced by the request's own alice, groups and all.
            entity("User", "alice", &[("Group", "contractors")]),
        ]);
        let hierarchy = Hierarchy::of(&statics);
        assert!(hierarchy.closes_requests());
        let ours = hierarchy.entities(own(), &statics, std::iter::empty()).expect("closed");
        let unreplaced = statics.iter().filter(|e| e.uid() != uid("User", "alice")).cloned();
        let cedars =
            Entities::from_entities(own().into_iter().map(Entity::from).chain(unreplaced), None).expect("cedar");
        assert_eq!(ours.len(), cedars.len());
        for e in cedars.iter() {
            assert_eq!(ancestors(&ours, &e.uid()), ancestors(&cedars, &e.uid()), "ancestors of {}", e.uid());
        }
        let alice = ancestors(&ours, &uid("User", "alice"));
        assert!(alice.contains(r#"Group::"everyone""#) && alice.contains(r#"Group::"compliance""#), "{alice:?}");
        assert!(
            !alice.contains(r#"Group::"contractors""#),
            "the static alice's groups are not the request's: {alice:?}"
        );
        let object = ancestors(&ours, &uid("Object", "lake/sales/2024/q1/orders.parquet"));
        assert!(object.contains(r#"Prefix::"lake/sales/""#) && object.contains(r#"Bucket::"lake""#), "{object:?}");
    }

    #[test]
    fn a_static_entity_below_one_a_request_builds_leaves_the_closure_to_cedar() {
        // A request's own `Prefix::"lake/sales/"` replaces the static one, and its parents with it: the static
        // closure of `Group::"sales-readers"` would be wrong for that request.
        let statics = statics(vec![
            entity("Group", "sales-readers", &[("Prefix", "lake/sales/")]),
            entity("Prefix", "lake/sales/", &[]),
        ]);
        assert!(!Hierarchy::of(&statics).closes_requests());
        let groups = statics_of_groups_only();
        assert!(Hierarchy::of(&groups).closes_requests());
    }

    fn statics_of_groups_only() -> Vec<Entity> {
        statics(vec![entity("Group", "a", &[("Group", "b")]), entity("Group", "b", &[])])
    }

    #[test]
    fn a_string_entity_is_the_one_cedars_public_constructor_builds() {
        use cedar_policy::RestrictedExpression;
        let string = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let public = Entity::new_with_tags(
            uid("User", "alice"),
            [("issuer".to_owned(), string("https://idp.example/"))],
            HashSet::from([uid("Group", "analysts"), uid("Group", "auditors")]),
            [("region".to_owned(), string("EU")), ("quote".to_owned(), string(r#"a "b" \ c"#))],
        )
        .expect("entity");
        let ours = string_entity(
            uid("User", "alice"),
            [("issuer", "https://idp.example/")],
            [uid("Group", "analysts"), uid("Group", "auditors")],
            [("region", "EU"), ("quote", r#"a "b" \ c"#)],
        );
        // `==` on entities compares uids only.
        let public: &CoreEntity = public.as_ref();
        assert!(ours.deep_eq(public), "{ours:?} != {public:?}");
    }

    #[test]
    fn a_cycle_among_a_requests_own_entities_is_refused_as_cedar_refuses_it() {
        let own = || {
            vec![
                plain_entity(uid("Prefix", "lake/a/"), [uid("Prefix", "lake/b/")]),
                plain_entity(uid("Prefix", "lake/b/"), [uid("Prefix", "lake/a/")]),
            ]
        };
        assert!(Entities::from_entities(own().into_iter().map(Entity::from), None).is_err());
        let refused = Hierarchy::default().entities(own(), &[], std::iter::empty());
        assert!(matches!(refused, Err(PolicyError::Entities(_))), "{refused:?}");
        let itself = vec![plain_entity(uid("Prefix", "lake/a/"), [uid("Prefix", "lake/a/")])];
        let refused = Hierarchy::default().entities(itself, &[], std::iter::empty());
        assert!(matches!(refused, Err(PolicyError::Entities(_))), "{refused:?}");
    }

    #[test]
    fn of_two_own_entities_with_one_uid_the_first_is_kept() {
        let statics = statics(vec![entity("Group", "analysts", &[("Group", "staff")]), entity("Group", "staff", &[])]);
        let own = vec![
            plain_entity(uid("User", "alice"), [uid("Group", "analysts")]),
            plain_entity(uid("User", "alice"), [uid("Group", "admins")]),
        ];
        let ours = Hierarchy::of(&statics).entities(own, &statics, std::iter::empty()).expect("closed");
        assert_eq!(ours.len(), 3, "alice once, and the two groups");
        assert_eq!(
            ancestors(&ours, &uid("User", "alice")),
            BTreeSet::from([r#"Group::"analysts""#.to_owned(), r#"Group::"staff""#.to_owned()])
        );
    }

    #[test]
    fn every_entity_a_request_builds_is_of_a_type_the_load_check_knows() {
        let catalog = Catalog::default();
        let resources = [
            "s3://lake/",
            "s3://lake/sales/",
            "s3://lake/sales/2024/q1.parquet",
            r#"Bucket::"lake""#,
            r#"Table::"sales.orders""#,
            r#"Column::"sales.orders.amount""#,
            r#"Database::"sales""#,
            r#"Role::"reader""#,
            r#"Audience::"spark""#,
        ];
        let mut built: Vec<OwnEntity> = own();
        for r in resources {
            built.extend(Resource::parse(r).unwrap_or_else(|e| panic!("{r}: {e}")).entities(&catalog));
        }
        for e in built.into_iter().map(Entity::from) {
            let kind = e.uid().type_name().basename().to_owned();
            assert!(REQUEST_BUILT.contains(&kind.as_str()), "{kind} is built by a request but not in REQUEST_BUILT");
        }
    }
}
