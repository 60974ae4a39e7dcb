//! Loading a policy directory: schema, policies with stable ids, catalog, static entities — all validated
//! together, so a set is either wholly usable or refused with errors that point into the files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use cedar_policy::{Entities, Entity, EntityUid, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::catalog::Catalog;
use super::closure::Hierarchy;
use super::decisions::{DecisionCache, Named};
use super::slice::PolicyIndex;

/// The schema file name inside a policy directory.
pub const SCHEMA_FILE: &str = "lakegate.cedarschema";
/// The catalog file name inside a policy directory.
pub const CATALOG_FILE: &str = "catalog.toml";
/// Optional static entities (e.g. group nesting) inside a policy directory.
pub const ENTITIES_FILE: &str = "entities.json";

/// Annotations Lakegate gives meaning to; any other annotation is kept and shown, never interpreted.
pub const ROW_FILTER: &str = "row_filter";
pub const MASK: &str = "mask";
pub const MASK_EXPR: &str = "mask_expr";
pub const MASKS: &[&str] = &["redact", "last4", "hash", "null"];

/// One problem found while loading, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// All problems of a refused policy directory.
#[derive(Debug, Clone)]
pub struct LoadErrors(pub Vec<Problem>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Where a policy came from.
#[derive(Debug, Clone)]
pub struct PolicyOrigin {
    pub file: PathBuf,
    pub line: usize,
}

/// A validated, ready-to-use policy set.
pub struct PolicyStore {
    pub(super) schema: Schema,
    pub(super) policies: PolicySet,
    pub(super) origins: HashMap<PolicyId, PolicyOrigin>,
    pub(super) catalog: Catalog,
    /// Entities from `entities.json` (group nesting and the like), action entities excluded.
    pub(super) static_entities: Vec<Entity>,
    /// The closed ancestors of the static entities, from which a request's own are closed.
    pub(super) hierarchy: Hierarchy,
    pub(super) dir: PathBuf,
    /// Each action with the actions it is in, so a request carries only its own action's hierarchy (Cedar would
    /// otherwise add and close over every action of the schema on every decision).
    pub(super) action_chains: HashMap<EntityUid, Vec<Entity>>,
    /// The policies by the entities their scopes name, so a decision evaluates only those that can apply.
    pub(super) index: PolicyIndex,
    /// Annotations and effect of each policy, read once at load instead of on every decision.
    pub(super) described: HashMap<PolicyId, Described>,
    /// Decisions already made against this store (a reload starts with an empty one).
    pub(super) decisions: DecisionCache,
    /// The shapes of request that conform to the schema (see [`RequestShape`]), checked once each.
    pub(super) conforming: RwLock<HashSet<RequestShape>>,
    /// Whether the schema enumerates the ids of an entity type: then a request's conformance depends on its
    /// principal's and resource's ids too, and every request is checked.
    pub(super) enumerates_ids: bool,
    /// The context of a request by a user acting for themselves, by front (Lakegate's fronts name themselves
    /// with a handful of constants).
    pub(super) direct_contexts: RwLock<HashMap<&'static str, cedar_policy::Context>>,
    /// The objects and prefixes the policies name: decided on their own, every other S3 resource with those
    /// under the same named prefixes.
    pub(super) named: Named,
}

/// Which policy set something was made under, without keeping that set alive: a session's kept rewrites and
/// filters are checked against the set in force before each use, and an idle session must not hold a set, with its
/// decisions, that reloads have long replaced.
///
/// A weak reference keeps the set's allocation, though not its contents, so no set loaded later can have the same
/// address while the id lives: the comparison is by address, and never mistakes a new set for the one it names.
#[derive(Debug, Clone)]
pub struct StoreId(std::sync::Weak<PolicyStore>);

impl StoreId {
    pub fn of(store: &std::sync::Arc<PolicyStore>) -> Self {
        Self(std::sync::Arc::downgrade(store))
    }

    /// Whether this names `store`.
    pub fn is(&self, store: &std::sync::Arc<PolicyStore>) -> bool {
        std::ptr::eq(self.0.as_ptr(), std::sync::Arc::as_ptr(store))
    }
}

/// What Cedar's check of a request against the schema depends on when Lakegate alone builds the context and the
/// schema enumerates no ids: the action, the resource's type (the principal's is always `User`), and whether
/// the context's `actors` set is empty (its attributes are strings otherwise: `front`, the acting chain's
/// subjects, `actor` when there is one). Bounded by the schema: its actions, Lakegate's resource types, two.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RequestShape {
    pub(super) action: EntityUid,
    pub(super) resource_kind: &'static str,
    pub(super) acted_for: bool,
}

/// What a decision says of a policy that decided it.
pub(super) struct Described {
    pub(super) forbid: bool,
    pub(super) annotations: BTreeMap<String, String>,
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore").field("dir", &self.dir).field("policies", &self.origins.len()).finish()
    }
}

impl PolicyStore {
    /// Loads and validates everything in `dir`; any problem refuses the whole set.
    pub fn load(dir: &Path) -> Result<Self, LoadErrors> {
        let mut problems = Vec::new();
        let schema_path = dir.join(SCHEMA_FILE);
        let schema = match std::fs::read_to_string(&schema_path) {
            Ok(text) => match Schema::from_cedarschema_str(&text) {
                Ok((schema, _warnings)) => Some(schema),
                Err(e) => {
                    problems.extend(diagnostics(&schema_path, &text, 0, &e));
                    None
                }
            },
            Err(e) => {
                problems.push(whole_file(&schema_path, format!("cannot read schema: {e}")));
                None
            }
        };

        let mut policies = PolicySet::new();
        let mut origins: HashMap<PolicyId, PolicyOrigin> = HashMap::new();
        // The policy files' texts, and where in them each policy starts, for the validator's diagnostics.
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        let mut sources: HashMap<PolicyId, (usize, usize)> = HashMap::new();
        for path in cedar_files(dir, &mut problems) {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(whole_file(&path, format!("cannot read: {e}")));
                    continue;
                }
            };
            let mut lines = Lines::new(&text);
            for (start, chunk) in split_statements(&text) {
                let line = lines.at(start + leading_trivia(chunk));
                match Policy::parse(None, chunk) {
                    Ok(policy) => {
                        let id = policy.annotation("id").map(str::to_owned).unwrap_or_else(|| {
                            format!("{}:{line}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
                        });
                        let pid = PolicyId::new(&id);
                        if let Some(previous) = origins.get(&pid) {
                            problems.push(Problem {
                                file: path.clone(),
                                line,
                                column: 1,
                                message: format!(
                                    "duplicate policy id {id:?} (first at {}:{})",
                                    previous.file.display(),
                                    previous.line
                                ),
                            });
                            continue;
                        }
                        problems.extend(check_annotations(&policy, &path, line));
                        if let Err(e) = policies.add(policy.new_id(pid.clone())) {
                            problems.push(Problem { file: path.clone(), line, column: 1, message: e.to_string() });
                            continue;
                        }
                        origins.insert(pid.clone(), PolicyOrigin { file: path.clone(), line });
                        sources.insert(pid, (files.len(), start));
                    }
                    Err(e) => problems.extend(diagnostics(&path, &text, start, &e)),
                }
            }
            files.push((path, text));
        }

        if let Some(schema) = &schema {
            let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            for error in result.validation_errors() {
                match sources.get(error.policy_id()).and_then(|&(file, start)| Some((files.get(file)?, start))) {
                    Some(((path, text), start)) => problems.extend(diagnostics(path, text, start, error)),
                    None => problems.push(whole_file(dir, error.to_string())),
                }
            }
        }

        let catalog_path = dir.join(CATALOG_FILE);
        let catalog = match std::fs::read_to_string(&catalog_path) {
            Ok(text) => match toml::from_str::<Catalog>(&text) {
                Ok(c) => {
                    if let Err(e) = c.check() {
                        problems.push(whole_file(&catalog_path, e.to_string()));
                    }
                    c
                }
                Err(e) => {
                    let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
                    problems.push(Problem {
                        file: catalog_path.clone(),
                        line,
                        column,
                        message: e.message().to_owned(),
                    });
                    Catalog::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Catalog::default(),
            Err(e) => {
                problems.push(whole_file(&catalog_path, format!("cannot read: {e}")));
                Catalog::default()
            }
        };

        let entities_path = dir.join(ENTITIES_FILE);
        let static_entities = match std::fs::read_to_string(&entities_path) {
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(json) => match Entities::from_json_value(json, schema.as_ref()) {
                    Ok(e) => e.iter().filter(|e| e.uid().type_name().basename() != "Action").cloned().collect(),
                    Err(e) => {
                        problems.push(whole_file(&entities_path, e.to_string()));
                        Vec::new()
                    }
                },
                Err(e) => {
                    problems.push(Problem {
                        file: entities_path.clone(),
                        line: e.line(),
                        column: e.column(),
                        message: e.to_string(),
                    });
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                problems.push(whole_file(&entities_path, format!("cannot read: {e}")));
                Vec::new()
            }
        };

        match schema {
            Some(schema) if problems.is_empty() => {
                let action_chains = match schema.action_entities() {
                    Ok(actions) => action_chains(&actions),
                    Err(e) => return Err(LoadErrors(vec![whole_file(&schema_path, e.to_string())])),
                };
                let index = PolicyIndex::new(&policies);
                let named = Named::of(&policies, &static_entities);
                let hierarchy = Hierarchy::of(&static_entities);
                let enumerates_ids = enumerates_ids(&schema);
                let described = policies
                    .policies()
                    .map(|p| {
                        let annotations = p.annotations().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                        (p.id().clone(), Described { forbid: p.effect() == cedar_policy::Effect::Forbid, annotations })
                    })
                    .collect();
                Ok(PolicyStore {
                    schema,
                    policies,
                    origins,
                    catalog,
                    static_entities,
                    hierarchy,
                    dir: dir.to_owned(),
                    action_chains,
                    index,
                    decisions: DecisionCache::new(),
                    conforming: RwLock::default(),
                    enumerates_ids,
                    direct_contexts: RwLock::default(),
                    named,
                    described,
                })
            }
            _ => Err(LoadErrors(problems)),
        }
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// Whether no policy is loaded (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The catalog of governed tables.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Where a policy was defined.
    pub fn origin(&self, id: &str) -> Option<&PolicyOrigin> {
        self.origins.get(&PolicyId::new(id))
    }

    /// The annotations of a policy.
    pub fn annotations(&self, id: &PolicyId) -> BTreeMap<String, String> {
        self.described.get(id).map(|d| d.annotations.clone()).unwrap_or_default()
    }
}

/// Whether the schema has an enumerated entity type (`entity Color enum ["red", "blue"]`), whose ids Cedar's
/// request check compares with the list. Read from Cedar's core schema: the public one does not tell.
fn enumerates_ids(schema: &Schema) -> bool {
    let core: &cedar_policy_core::validator::ValidatorSchema = schema.as_ref();
    core.entity_types().any(|t| matches!(t.kind, cedar_policy_core::validator::ValidatorEntityTypeKind::Enum(_)))
}

/// Every action with itself and its ancestors, as entities.
fn action_chains(actions: &Entities) -> HashMap<EntityUid, Vec<Entity>> {
    actions
        .iter()
        .map(|action| {
            let uid = action.uid();
            let ancestors = actions.ancestors(&uid).into_iter().flatten().filter_map(|a| actions.get(a)).cloned();
            let chain = std::iter::once(action.clone()).chain(ancestors).collect();
            (uid, chain)
        })
        .collect()
}

/// The `*.cedar` files of a directory, sorted so that load order (and thus error order) is stable.
fn cedar_files(dir: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let mut files = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
            .collect::<Vec<_>>(),
        Err(e) => {
            problems.push(whole_file(dir, format!("cannot read policy directory: {e}")));
            Vec::new()
        }
    };
    files.sort();
    files
}

/// Lakegate's own annotations must be well-formed where they are used.
fn check_annotations(policy: &Policy, file: &Path, line: usize) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |message: String| problems.push(Problem { file: file.to_owned(), line, column: 1, message });
    let forbid = policy.effect() == cedar_policy::Effect::Forbid;
    for key in [ROW_FILTER, MASK, MASK_EXPR] {
        if let Some(value) = policy.annotation(key) {
            if forbid {
                problem(format!("@{key} has no meaning on a forbid policy"));
            }
            if value.trim().is_empty() {
                problem(format!("@{key} must not be empty"));
            }
        }
    }
    if let Some(mask) = policy.annotation(MASK)
        && !MASKS.contains(&mask)
    {
        problem(format!("@mask({mask:?}) is not one of {} (use @mask_expr for an expression)", MASKS.join(", ")));
    }
    if policy.annotation(MASK).is_some() && policy.annotation(MASK_EXPR).is_some() {
        problem("@mask and @mask_expr exclude each other".into());
    }
    let restricts = policy.to_string().contains("Action::\"RestrictRows\"");
    if restricts && policy.annotation(ROW_FILTER).is_none() {
        problem("a RestrictRows policy needs a @row_filter".into());
    }
    problems
}

/// Splits Cedar source into statements at top-level `;`, skipping strings and comments, so that each policy can
/// be parsed alone and located by its own line. Returns (byte offset, text) pairs with non-empty content.
fn split_statements(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0usize, 0usize);
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b';' => {
                if let Some(chunk) = text.get(start..=i) {
                    out.push((start, chunk));
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(rest) = text.get(start..) {
        out.push((start, rest));
    }
    out.retain(|(_, chunk)| leading_trivia(chunk) < chunk.len());
    out
}

/// Bytes of whitespace and `//` comments before the first token.
fn leading_trivia(chunk: &str) -> usize {
    let mut i = 0;
    let bytes = chunk.as_bytes();
    loop {
        match bytes.get(i) {
            Some(c) if c.is_ascii_whitespace() => i += 1,
            Some(b'/') if bytes.get(i + 1) == Some(&b'/') => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            _ => return i,
        }
    }
}

/// 1-based line and column of a byte offset.
/// Line numbers of offsets in one text, counted on from the last offset asked for: a file of many policies is
/// scanned once rather than from its start for each policy.
struct Lines<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines { text, offset: 0, line: 1 }
    }

    /// The 1-based line of `offset`.
    fn at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            return line_col(self.text, offset).0;
        }
        let between = self.text.as_bytes().get(self.offset..offset).unwrap_or_default();
        self.line += between.iter().filter(|&&b| b == b'\n').count();
        self.offset = offset;
        self.line
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// Turns a Cedar diagnostic into located problems; `base` is where the parsed text starts in the file.
fn diagnostics(file: &Path, text: &str, base: usize, e: &(impl Diagnostic + ?Sized)) -> Vec<Problem> {
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message = format!("{message} (help: {help})");
    }
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset()).unwrap_or(0);
    let mut out = Vec::new();
    if let Some(related) = e.related() {
        for r in related {
            let offset = r.labels().and_then(|mut l| l.next()).map(|l| l.offset()).unwrap_or(0);
            let (line, column) = line_col(text, base + offset);
            out.push(Problem { file: file.to_owned(), line, column, message: r.to_string() });
        }
    }
    if out.is_empty() {
        let (line, column) = line_col(text, base + offset);
        out.push(Problem { file: file.to_owned(), line, column, message });
    }
    out
}

fn whole_file(file: &Path, message: String) -> Problem {
    Problem { file: file.to_owned(), line: 1, column: 1, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let text = "// a;b\npermit(principal, action, resource) when { \"x;y\" == \"z\" };\n\nforbid(principal, action, resource);\n// tail";
        let parts: Vec<&str> = split_statements(text).into_iter().map(|(_, s)| s.trim()).collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts[0].ends_with("};"));
        assert!(parts[1].starts_with("forbid"));
    }

    #[test]
    fn lines_counted_on_agree_with_lines_counted_from_the_start() {
        let text = "a\n\nb;\n  c\n;d\n";
        let mut lines = Lines::new(text);
        for offset in [0, 1, 2, 3, 5, 9, 10, 11, 12, 99, 4, 0] {
            assert_eq!(lines.at(offset), line_col(text, offset).0, "offset {offset}");
        }
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
