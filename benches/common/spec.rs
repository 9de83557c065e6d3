//! Sampler and pruner specs on the benchmarks' command lines: a kind, optionally with
//! options after `@` as `:`-separated TOML assignments, e.g.
//! `tpe@n_ei_candidates=48:bandwidth_floor="kernels"` or `median@n_warmup_steps=100`,
//! the same table a config's `[sampler.tpe]` or `[pruner.median]` holds.

#![allow(dead_code)]

use anyhow::{anyhow, Result};

/// A spec's kind and options table.
pub fn split_spec(spec: &str) -> Result<(&str, Option<toml::Table>)> {
    let Some((kind, opts)) = spec.split_once('@') else {
        return Ok((spec, None));
    };
    let table: toml::Table = opts.replace(':', "\n").parse().map_err(|e| {
        anyhow!("spec {spec:?}: options after '@' must be key=value:key=value: {e}")
    })?;
    Ok((kind, Some(table)))
}

/// Builds a sampler from a spec.
pub fn build_sampler(spec: &str, seed: u64) -> Result<Box<dyn gaittune::sampler::Sampler>> {
    let (kind, options) = split_spec(spec)?;
    gaittune::sampler::build(kind, seed, options.as_ref())
        .map_err(|e| anyhow!("sampler {spec:?}: {e}"))
}
