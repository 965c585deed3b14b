//! Low-cardinality http.route templates from raw paths.
//!
//! A regex alone cannot tell `/users/alice` from `/users/list`; what makes a
//! segment a parameter is that many different values appear at the same
//! position. So segments are fed into a trie: id-looking segments (numbers,
//! UUIDs, hashes, tokens) become `{id}` at once, and a position that has seen
//! more than `max_fanout` distinct literals collapses into `{param}`. The
//! trie is bounded in nodes and depth, so memory stays bounded whatever the
//! traffic; an early request may still carry a literal that a later one sees
//! collapsed (the template converges once a position's fan-out is exceeded).
/// Looked up per path segment of every HTTP exchange: foldhash (randomly
/// seeded; the trie's node and fan-out caps bound crafted paths), not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub const ID: &str = "{id}";
pub const PARAM: &str = "{param}";
const MAX_LITERAL_LEN: usize = 64;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Child for id-like segments; does not count towards fan-out.
    id_child: Option<Box<Node>>,
    /// Set once fan-out was exceeded: every literal here is a parameter.
    param_child: Option<Box<Node>>,
}

impl Node {
    fn size(&self) -> usize {
        1 + self.children.values().map(Node::size).sum::<usize>()
            + self.id_child.as_ref().map_or(0, |n| n.size())
            + self.param_child.as_ref().map_or(0, |n| n.size())
    }
}

pub struct RouteTemplater {
    root: Node,
    nodes: usize,
    max_fanout: usize,
    max_nodes: usize,
    max_depth: usize,
    /// Reused by [`RouteTemplater::template_str`] (one template per HTTP exchange).
    scratch: String,
    /// Templates of paths seen since the trie last changed (see
    /// [`RouteTemplater::template_str`]), bounded by [`CACHE_MAX`] entries
    /// of paths up to [`CACHE_PATH_MAX`] bytes.
    cache: HashMap<Box<str>, crate::otel::attr::Str>,
    /// Set by every change of the trie (a template depends only on the path
    /// and the trie), cleared when the cache is emptied.
    trie_changed: bool,
}

/// Paths whose templates are remembered (then the memory is cleared and refilled).
const CACHE_MAX: usize = 1024;
/// Longer paths are templated every time.
const CACHE_PATH_MAX: usize = 128;

/// Numbers, UUIDs, hex hashes, dates and opaque tokens: values, never route names.
pub fn is_id_like(seg: &str) -> bool {
    let len = seg.len();
    if len == 0 {
        return false;
    }
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    if digits == len {
        return true;
    }
    let is_uuid = len == 36
        && seg
            .bytes()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() });
    if is_uuid {
        return true;
    }
    if len >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    if digits >= 3 && digits * 2 >= len {
        return true;
    }
    // Opaque tokens (base64/base62 ids): long, mixed letters and digits.
    len >= 20 && digits > 0 && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.'))
}

/// `name` split on `sep` with every id-like segment replaced by `{id}`
/// (messaging destinations: MQTT topics on '/', NATS subjects on '.');
/// None when no segment is id-like, so the name is its own template.
pub fn template_id_segments(name: &str, sep: char) -> Option<String> {
    if !name.split(sep).any(is_id_like) {
        return None;
    }
    let parts: Vec<&str> = name.split(sep).map(|s| if is_id_like(s) { ID } else { s }).collect();
    Some(parts.join(&sep.to_string()))
}

impl RouteTemplater {
    pub fn new(max_fanout: usize, max_nodes: usize, max_depth: usize) -> Self {
        Self {
            root: Node::default(),
            nodes: 1,
            max_fanout: max_fanout.max(2),
            max_nodes,
            max_depth: max_depth.max(1),
            scratch: String::new(),
            cache: HashMap::default(),
            trie_changed: false,
        }
    }

    /// Nodes currently held (bounded by `max_nodes` plus one path's depth).
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Template for `path` (no query string), learning from it.
    pub fn template(&mut self, path: &str) -> String {
        let mut out = String::with_capacity(path.len().min(128));
        self.template_into(path, &mut out);
        out
    }

    /// [`RouteTemplater::template`] as an attribute value: written into a
    /// reused buffer and copied inline when short, so a typical route
    /// allocates nothing (its copy in the metric series key neither).
    ///
    /// A path seen before is answered from memory: most traffic repeats a
    /// few paths, and walking the trie (split, id checks, a map lookup per
    /// segment) cost several times the lookup. Only templates made without
    /// changing the trie are remembered, and any change forgets them all, so
    /// the answer is always the one the trie gives now.
    pub fn template_str(&mut self, path: &str) -> crate::otel::attr::Str {
        // Kept between calls only while small (memory stays bounded).
        const KEEP_MAX: usize = 1024;
        self.forget_if_changed();
        if let Some(t) = self.cache.get(path) {
            return t.clone();
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.template_into(path, &mut out);
        let s = crate::otel::attr::Str::copy(&out);
        if out.capacity() <= KEEP_MAX {
            self.scratch = out;
        }
        // Made while the trie changed: not remembered (nor anything before).
        if !self.forget_if_changed() && path.len() <= CACHE_PATH_MAX {
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
            self.cache.insert(path.into(), s.clone());
        }
        s
    }

    /// Empty the cache if the trie changed since it was filled; true if it did.
    fn forget_if_changed(&mut self) -> bool {
        if !self.trie_changed {
            return false;
        }
        self.cache.clear();
        self.trie_changed = false;
        true
    }

    fn template_into(&mut self, path: &str, out: &mut String) {
        let mut node = &mut self.root;
        let mut nodes = self.nodes;
        let mut full = nodes >= self.max_nodes;
        for (depth, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
            if depth >= self.max_depth {
                out.push_str("/*");
                break;
            }
            out.push('/');
            if is_id_like(seg) {
                out.push_str(ID);
                if node.id_child.is_none() {
                    if full {
                        // Can't grow: finish with classification only.
                        Self::rest_without_trie(out, path, depth + 1, self.max_depth);
                        break;
                    }
                    nodes += 1;
                    full = nodes >= self.max_nodes;
                    self.trie_changed = true;
                }
                node = node.id_child.get_or_insert_with(Default::default);
                continue;
            }
            if node.param_child.is_none() && !node.children.contains_key(seg) {
                let grow = seg.len() <= MAX_LITERAL_LEN && node.children.len() < self.max_fanout && !full;
                if !grow {
                    if seg.len() > MAX_LITERAL_LEN || full {
                        out.push_str(PARAM);
                        Self::rest_without_trie(out, path, depth + 1, self.max_depth);
                        break;
                    }
                    // Fan-out exceeded: the position is a parameter from now on.
                    let removed: usize = node.children.drain().map(|(_, n)| n.size()).sum();
                    nodes = nodes - removed + 1;
                    full = nodes >= self.max_nodes;
                    node.param_child = Some(Box::default());
                    self.trie_changed = true;
                } else {
                    nodes += 1;
                    full = nodes >= self.max_nodes;
                    node.children.insert(seg.into(), Node::default());
                    self.trie_changed = true;
                }
            }
            if node.param_child.is_some() {
                out.push_str(PARAM);
                node = node.param_child.as_mut().unwrap();
            } else {
                out.push_str(seg);
                node = node.children.get_mut(seg).unwrap();
            }
        }
        self.nodes = nodes;
        if out.is_empty() {
            out.push('/');
        }
    }

    fn rest_without_trie(out: &mut String, path: &str, from: usize, max_depth: usize) {
        for (depth, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate().skip(from) {
            if depth >= max_depth {
                out.push_str("/*");
                return;
            }
            out.push('/');
            out.push_str(if is_id_like(seg) { ID } else { PARAM });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_collapse_immediately() {
        let mut t = RouteTemplater::new(8, 1000, 8);
        assert_eq!(t.template("/users/42"), "/users/{id}");
        assert_eq!(t.template("/users/550e8400-e29b-41d4-a716-446655440000/posts"), "/users/{id}/posts");
        assert_eq!(t.template("/blobs/9f86d081884c7d659a2feaa0c55ad015"), "/blobs/{id}");
        assert_eq!(t.template("/t/eyJhbGciOiJIUzI1NiJ9abc1"), "/t/{id}");
        assert_eq!(t.template("/api/v1/items"), "/api/v1/items");
        assert_eq!(t.template("/"), "/");
        assert_eq!(t.template(""), "/");
        assert_eq!(t.template("/a//b/"), "/a/b");
    }

    #[test]
    fn high_fanout_position_collapses() {
        let mut t = RouteTemplater::new(4, 1000, 8);
        for name in ["alice", "bob", "carol", "dave"] {
            assert_eq!(t.template(&format!("/users/{name}/profile")), format!("/users/{name}/profile"));
        }
        assert_eq!(t.template("/users/erin/profile"), "/users/{param}/profile");
        assert_eq!(t.template("/users/alice/profile"), "/users/{param}/profile");
        assert_eq!(t.template("/orders"), "/orders");
    }

    #[test]
    fn bounded_in_nodes_and_depth() {
        let mut t = RouteTemplater::new(1_000_000, 64, 4);
        for i in 0..10_000 {
            let p = format!("/a{}x/b{}y/c/d/e/f", i % 97, i);
            let r = t.template(&p);
            assert!(r.split('/').count() <= 6, "{r}");
        }
        assert!(t.node_count() <= 64 + 4, "{}", t.node_count());
        assert_eq!(t.template("/a/b/c/d/e"), "/{param}/{param}/{param}/{param}/*");
    }

    /// Remembered templates are the ones the trie gives: the same sequence
    /// of paths through `template_str` and through `template` (which never
    /// uses the cache) gives the same templates, while ids, fan-out collapses
    /// and the node bound change the trie between repeats.
    #[test]
    fn cached_templates_equal_fresh_ones() {
        let mut paths = Vec::new();
        for i in 0..3000u32 {
            paths.push(format!("/users/u{}/profile", i % 7));
            paths.push(format!("/items/{}", i % 50));
            paths.push(format!("/a{}/b{}/c", i % 13, i % 11));
            paths.push("/".to_string());
            paths.push(format!("/long/{}", "x".repeat(150 + (i % 3) as usize)));
        }
        for (fanout, nodes) in [(4, 1000), (8, 40), (1000, 30)] {
            let (mut cached, mut fresh) =
                (RouteTemplater::new(fanout, nodes, 6), RouteTemplater::new(fanout, nodes, 6));
            for p in &paths {
                assert_eq!(cached.template_str(p).as_str(), fresh.template(p), "{p}");
            }
            assert!(cached.cache.len() <= CACHE_MAX);
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let mut t = RouteTemplater::new(2, 16, 3);
        for p in ["//", "/é/ü/ö/ä", "/%00/..", "no-slash", "/x/{id}/y", &"a/".repeat(1000)] {
            let _ = t.template(p);
        }
    }
}
