//! The model table: which provider serves a requested model name, under which
//! upstream name, with which request defaults and fallbacks.
//!
//! Resolution order (first hit wins):
//!
//! 1. an exact model name or alias (one hash lookup);
//! 2. `provider/model`, when the text before the first `/` is a provider name
//!    (the rest goes upstream as is; no defaults, no fallbacks). This comes
//!    after exact names so that a configured model whose name contains a `/`
//!    (`meta-llama/Llama-3.3-70B`) is still found;
//! 3. globs, in configuration order (a glob has exactly one `*`);
//! 4. the default provider, with the requested name as is.
//!
//! Globs are limited to one `*` so that the matched text is unambiguous: the
//! glob's `upstream_model` may contain a `*` that is replaced by it
//! (`"claude-*"` -> `"anthropic.claude-*-v1"`).

use std::borrow::Cow;
use std::collections::HashMap;

/// How many fallback targets [`ModelTable::fallback_targets`] returns at most;
/// a retry chain longer than this only adds latency to a failing request.
pub const MAX_FALLBACKS: usize = 8;

/// Request defaults a model applies when the client did not set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDefaults {
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Output token limit.
    pub max_tokens: Option<u64>,
    /// `Some(false)` strips thinking/reasoning options from the request;
    /// `Some(true)` asks for them; `None` leaves the request alone.
    pub thinking: Option<bool>,
}

impl ModelDefaults {
    /// True when no default is set, so the request needs no rewriting.
    pub fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.max_tokens.is_none()
            && self.thinking.is_none()
    }
}

/// One configured model (or glob of models).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSpec {
    /// The exact name clients ask for, or a glob with one `*` (`"claude-*"`,
    /// `"*"`).
    pub name: String,
    /// Other exact names for the same model.
    pub aliases: Vec<String>,
    /// Index into the provider list.
    pub provider: usize,
    /// The name sent upstream; `None` sends the requested name (for a glob)
    /// or `name` (for an exact model). For a glob it may contain one `*`,
    /// replaced by the text the glob's `*` matched.
    pub upstream_model: Option<String>,
    /// Models to try when this one fails: model names or `provider/model`.
    pub fallbacks: Vec<String>,
    /// Request defaults for this model.
    pub defaults: ModelDefaults,
}

/// Where a requested model goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'t> {
    /// Index into the provider list.
    pub provider: usize,
    /// The model name to send upstream.
    pub upstream_model: Cow<'t, str>,
    /// The model's request defaults, `None` when it has none.
    pub defaults: Option<&'t ModelDefaults>,
    /// The model's configured fallbacks (unresolved).
    pub fallbacks: &'t [String],
    /// Index of the matching [`ModelSpec`], `None` for `provider/model` and
    /// default-provider targets.
    pub model_index: Option<usize>,
}

/// A glob with one `*`: `prefix*suffix`.
#[derive(Debug)]
struct Glob {
    prefix: String,
    suffix: String,
    spec: usize,
}

impl Glob {
    /// The text the `*` matched, if `name` matches.
    fn capture<'n>(&self, name: &'n str) -> Option<&'n str> {
        let (n, p, s) = (
            name.as_bytes(),
            self.prefix.as_bytes(),
            self.suffix.as_bytes(),
        );
        if n.len() < p.len() + s.len() {
            return None;
        }
        // Compare only non-empty parts, first byte inline. An empty `String`
        // has the dangling pointer 0x1, and glibc's AVX-512 `memcmp` given it
        // (even with length 0) took ~75 ns per call here: a masked load from
        // an unmapped page is a microcode assist. Most globs also fail on
        // their first byte, so this skips the call altogether.
        if !p.is_empty() && (p[0] != n[0] || !n.starts_with(p)) {
            return None;
        }
        if !s.is_empty() && (s[s.len() - 1] != n[n.len() - 1] || !n.ends_with(s)) {
            return None;
        }
        name.get(p.len()..n.len() - s.len())
    }
}

/// The resolved model table; built once per config, read on every request.
#[derive(Debug)]
pub struct ModelTable {
    specs: Vec<ModelSpec>,
    /// Exact names and aliases -> spec index.
    exact: HashMap<Box<str>, usize>,
    globs: Vec<Glob>,
    providers: Vec<String>,
    default_provider: Option<usize>,
}

impl ModelTable {
    /// Builds the table. Errors name the offending model: duplicate names or
    /// aliases, globs with more than one `*`, aliases or non-glob upstream
    /// names containing `*`, empty names, and provider indexes out of range.
    pub fn new(
        specs: Vec<ModelSpec>,
        provider_names: &[String],
        default_provider: Option<usize>,
    ) -> Result<ModelTable, String> {
        if let Some(d) = default_provider {
            if d >= provider_names.len() {
                return Err(format!("default provider index {d} out of range"));
            }
        }
        let mut exact: HashMap<Box<str>, usize> = HashMap::new();
        let mut globs: Vec<Glob> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let name = spec.name.as_str();
            if name.is_empty() {
                return Err(format!("model #{i}: empty name"));
            }
            if spec.provider >= provider_names.len() {
                return Err(format!(
                    "model {name:?}: provider index {} out of range",
                    spec.provider
                ));
            }
            match name.matches('*').count() {
                0 => {
                    if spec
                        .upstream_model
                        .as_deref()
                        .is_some_and(|u| u.contains('*'))
                    {
                        return Err(format!(
                            "model {name:?}: upstream_model has '*' but the name is not a glob"
                        ));
                    }
                    if exact.insert(name.into(), i).is_some() {
                        return Err(format!("model {name:?}: duplicate name or alias"));
                    }
                }
                1 => {
                    if spec
                        .upstream_model
                        .as_deref()
                        .is_some_and(|u| u.matches('*').count() > 1)
                    {
                        return Err(format!(
                            "model {name:?}: upstream_model may contain at most one '*'"
                        ));
                    }
                    let (prefix, suffix) = name.split_once('*').expect("one star");
                    if globs
                        .iter()
                        .any(|g| g.prefix == prefix && g.suffix == suffix)
                    {
                        return Err(format!("model {name:?}: duplicate glob"));
                    }
                    globs.push(Glob {
                        prefix: prefix.to_owned(),
                        suffix: suffix.to_owned(),
                        spec: i,
                    });
                }
                _ => {
                    return Err(format!(
                        "model {name:?}: bad glob (at most one '*' is supported)"
                    ))
                }
            }
            for alias in &spec.aliases {
                if alias.is_empty() || alias.contains('*') {
                    return Err(format!(
                        "model {name:?}: alias {alias:?} must be a non-empty exact name"
                    ));
                }
                if exact.insert(alias.as_str().into(), i).is_some() {
                    return Err(format!("model {name:?}: duplicate name or alias {alias:?}"));
                }
            }
        }
        Ok(ModelTable {
            specs,
            exact,
            globs,
            providers: provider_names.to_vec(),
            default_provider,
        })
    }

    /// The configured models, in configuration order.
    pub fn specs(&self) -> &[ModelSpec] {
        &self.specs
    }

    /// Where `requested` goes, or `None` when nothing matches and there is no
    /// default provider.
    pub fn resolve<'t>(&'t self, requested: &'t str) -> Option<Target<'t>> {
        if let Some(&i) = self.exact.get(requested) {
            let spec = &self.specs[i];
            let upstream = spec.upstream_model.as_deref().unwrap_or(&spec.name);
            return Some(self.spec_target(i, Cow::Borrowed(upstream)));
        }
        if let Some((provider, model)) = requested.split_once('/') {
            // A handful of providers: a linear scan beats hashing here.
            if let Some(p) = self.providers.iter().position(|n| n == provider) {
                return Some(Target {
                    provider: p,
                    upstream_model: Cow::Borrowed(model),
                    defaults: None,
                    fallbacks: &[],
                    model_index: None,
                });
            }
        }
        for glob in &self.globs {
            if let Some(star) = glob.capture(requested) {
                let spec = &self.specs[glob.spec];
                let upstream = match spec.upstream_model.as_deref() {
                    None => Cow::Borrowed(requested),
                    Some(u) if u.contains('*') => Cow::Owned(u.replacen('*', star, 1)),
                    Some(u) => Cow::Borrowed(u),
                };
                return Some(self.spec_target(glob.spec, upstream));
            }
        }
        self.default_provider.map(|p| Target {
            provider: p,
            upstream_model: Cow::Borrowed(requested),
            defaults: None,
            fallbacks: &[],
            model_index: None,
        })
    }

    fn spec_target<'t>(&'t self, i: usize, upstream: Cow<'t, str>) -> Target<'t> {
        let spec = &self.specs[i];
        Target {
            provider: spec.provider,
            upstream_model: upstream,
            defaults: (!spec.defaults.is_empty()).then_some(&spec.defaults),
            fallbacks: &spec.fallbacks,
            model_index: Some(i),
        }
    }

    /// The fallback chain of `target`, breadth first: its own fallbacks in
    /// order, then theirs. Unknown names are skipped, and so is any target
    /// (same provider and upstream model) already in the chain or equal to
    /// `target`, which breaks cycles. At most [`MAX_FALLBACKS`] entries.
    pub fn fallback_targets<'t>(&'t self, target: &Target<'t>) -> Vec<Target<'t>> {
        let mut out: Vec<Target<'t>> = Vec::new();
        // Index of the next chain entry whose fallbacks are expanded; the
        // original target's fallbacks come first.
        let mut next = 0;
        let mut pending: &'t [String] = target.fallbacks;
        loop {
            for name in pending {
                if out.len() == MAX_FALLBACKS {
                    return out;
                }
                let Some(t) = self.resolve(name) else {
                    continue;
                };
                let seen = |o: &Target<'_>| {
                    o.provider == t.provider && o.upstream_model == t.upstream_model
                };
                if seen(target) || out.iter().any(seen) {
                    continue;
                }
                out.push(t);
            }
            match out.get(next) {
                Some(t) => pending = t.fallbacks,
                None => return out,
            }
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Vec<String> {
        ["openai", "anthropic", "gemini"].map(String::from).to_vec()
    }

    fn spec(name: &str, provider: usize) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            provider,
            ..ModelSpec::default()
        }
    }

    fn table(specs: Vec<ModelSpec>, default: Option<usize>) -> ModelTable {
        ModelTable::new(specs, &providers(), default).unwrap()
    }

    #[test]
    fn exact_and_alias() {
        let mut a = spec("fast", 0);
        a.aliases = vec!["quick".into()];
        a.upstream_model = Some("gpt-4o-mini".into());
        a.defaults.temperature = Some(0.2);
        let b = spec("claude-sonnet-4", 1);
        let t = table(vec![a, b, spec("*", 2)], None);
        let r = t.resolve("fast").unwrap();
        assert_eq!((r.provider, &*r.upstream_model), (0, "gpt-4o-mini"));
        assert_eq!(r.defaults.unwrap().temperature, Some(0.2));
        assert_eq!(r.model_index, Some(0));
        let r = t.resolve("quick").unwrap();
        assert_eq!((r.provider, &*r.upstream_model), (0, "gpt-4o-mini"));
        // Exact beats the catch-all glob; no upstream_model sends the name.
        let r = t.resolve("claude-sonnet-4").unwrap();
        assert_eq!((r.provider, &*r.upstream_model), (1, "claude-sonnet-4"));
        assert!(r.defaults.is_none());
        assert!(matches!(r.upstream_model, Cow::Borrowed(_)));
    }

    #[test]
    fn provider_slash_model() {
        let mut slashy = spec("meta-llama/Llama-3", 0);
        slashy.upstream_model = Some("llama3".into());
        let mut g = spec("gemini/*", 0);
        g.fallbacks = vec!["x".into()];
        let t = table(vec![slashy, g], None);
        let r = t.resolve("gemini/gemini-2.5-pro").unwrap();
        assert_eq!((r.provider, &*r.upstream_model), (2, "gemini-2.5-pro"));
        assert!(r.fallbacks.is_empty() && r.defaults.is_none() && r.model_index.is_none());
        // Only the first '/' splits.
        let r = t.resolve("openai/org/model").unwrap();
        assert_eq!((r.provider, &*r.upstream_model), (0, "org/model"));
        // An exact name with a slash wins over the provider split.
        assert_eq!(
            t.resolve("meta-llama/Llama-3").unwrap().upstream_model,
            "llama3"
        );
        // Not a provider: falls through to nothing.
        assert!(t.resolve("nobody/x").is_none());
    }

    #[test]
    fn globs_in_order_with_substitution() {
        let mut a = spec("claude-*", 1);
        a.upstream_model = Some("anthropic.claude-*-v1".into());
        let mut b = spec("claude-3*", 0); // shadowed by the first glob
        b.upstream_model = Some("never".into());
        let mut c = spec("*-latest", 2);
        c.upstream_model = Some("fixed".into());
        let d = spec("gpt-*", 0);
        let t = table(vec![a, b, c, d], Some(0));
        let r = t.resolve("claude-3-opus").unwrap();
        assert_eq!(
            (r.provider, &*r.upstream_model),
            (1, "anthropic.claude-3-opus-v1")
        );
        assert_eq!(r.model_index, Some(0));
        assert_eq!(t.resolve("gemini-latest").unwrap().upstream_model, "fixed");
        assert_eq!(t.resolve("gpt-5").unwrap().upstream_model, "gpt-5");
        // Empty capture and prefix/suffix overlap.
        assert_eq!(
            t.resolve("claude-").unwrap().upstream_model,
            "anthropic.claude--v1"
        );
        let t2 = table(vec![spec("ab*ba", 0)], None);
        assert!(t2.resolve("aba").is_none());
        assert!(t2.resolve("abba").is_some());
        // Default provider takes the rest, name as is.
        let r = t.resolve("mistral-large").unwrap();
        assert_eq!(
            (r.provider, &*r.upstream_model, r.model_index),
            (0, "mistral-large", None)
        );
        // And without a default provider, nothing.
        assert!(table(vec![], None).resolve("mistral-large").is_none());
    }

    #[test]
    fn construction_errors() {
        let p = providers();
        let dup = vec![spec("a", 0), spec("a", 1)];
        assert!(ModelTable::new(dup, &p, None)
            .unwrap_err()
            .contains("duplicate"));
        let mut alias = spec("b", 0);
        alias.aliases = vec!["a".into()];
        let e = ModelTable::new(vec![spec("a", 0), alias], &p, None).unwrap_err();
        assert!(e.contains("duplicate"));
        let e = ModelTable::new(vec![spec("a*b*", 0)], &p, None).unwrap_err();
        assert!(e.contains("bad glob"));
        assert!(ModelTable::new(vec![spec("a*", 0), spec("a*", 1)], &p, None).is_err());
        assert!(ModelTable::new(vec![spec("a", 9)], &p, None).is_err());
        assert!(ModelTable::new(vec![], &p, Some(3)).is_err());
        let mut star_up = spec("exact", 0);
        star_up.upstream_model = Some("x-*".into());
        assert!(ModelTable::new(vec![star_up], &p, None).is_err());
        assert!(ModelTable::new(vec![spec("", 0)], &p, None).is_err());
    }

    #[test]
    fn fallback_chain_breadth_first_with_cycles() {
        let fb = |name: &str, p: usize, f: &[&str]| {
            let mut s = spec(name, p);
            s.fallbacks = f.iter().map(|s| s.to_string()).collect();
            s
        };
        let t = table(
            vec![
                fb("a", 0, &["b", "unknown", "c"]),
                fb("b", 1, &["a", "d", "b"]),
                fb("c", 2, &["gemini/flash", "b"]),
                fb("d", 0, &["a"]),
                fb("loop", 0, &["loop"]),
            ],
            None,
        );
        let chain = |m: &str| -> Vec<String> {
            let target = t.resolve(m).unwrap();
            t.fallback_targets(&target)
                .iter()
                .map(|x| x.upstream_model.to_string())
                .collect()
        };
        assert_eq!(chain("a"), ["b", "c", "d", "flash"]);
        assert_eq!(chain("d"), ["a", "b", "c", "flash"]);
        assert!(chain("loop").is_empty());
        // The cap.
        let many: Vec<String> = (0..20).map(|i| format!("openai/m{i}")).collect();
        let mut s = spec("many", 0);
        s.fallbacks = many;
        let t = table(vec![s], None);
        let target = t.resolve("many").unwrap();
        assert_eq!(t.fallback_targets(&target).len(), MAX_FALLBACKS);
    }
}
