use super::*;
use crate::sampler::RandomSampler;
use crate::space::Choice;

fn float_space(d: usize, low: f64, high: f64) -> SearchSpace {
    SearchSpace::new((0..d).map(|i| {
        (
            format!("x{i:02}"),
            Distribution::Float {
                low,
                high,
                log: false,
                step: None,
            },
        )
    }))
    .unwrap()
}

fn trial(number: u64, params: Params, state: TrialState, value: Option<f64>) -> FrozenTrial {
    FrozenTrial::new(number, state, params, value)
}

fn xs(p: &Params) -> Vec<f64> {
    p.values().copied().collect()
}

/// Runs `n` sequential ask/tell steps minimising `f`; returns the history.
fn run(
    sampler: &mut dyn Sampler,
    space: &SearchSpace,
    n: u64,
    f: &dyn Fn(&Params) -> f64,
) -> Vec<FrozenTrial> {
    let mut history = Vec::new();
    for number in 0..n {
        let p = sampler.sample(&SampleRequest {
            space,
            history: &history,
            direction: Direction::Minimize,
            trial_number: number,
        });
        space.check_params(&p).unwrap();
        let v = f(&p);
        history.push(trial(number, p, TrialState::Complete, Some(v)));
    }
    history
}

fn best(h: &[FrozenTrial]) -> f64 {
    h.iter()
        .filter_map(|t| t.value)
        .fold(f64::INFINITY, f64::min)
}

const SHIFT8: [f64; 8] = [1.5, -2.0, 0.5, 2.5, -1.0, -2.5, 1.0, -0.5];

fn sphere_shift(p: &Params) -> f64 {
    xs(p)
        .iter()
        .enumerate()
        .map(|(i, x)| (x - SHIFT8[i % 8]).powi(2))
        .sum()
}

fn ellipsoid_shift(p: &Params) -> f64 {
    let x = xs(p);
    let d = x.len();
    x.iter()
        .enumerate()
        .map(|(i, v)| 10f64.powf(6.0 * i as f64 / (d - 1) as f64) * (v - SHIFT8[i % 8]).powi(2))
        .sum()
}

#[test]
fn converges_on_shifted_sphere_and_ellipsoid_in_10d() {
    let space = float_space(10, -5.0, 5.0);
    let h = run(&mut CmaesSampler::new(1), &space, 1500, &sphere_shift);
    // From ~20 at random to 1e-6: a run that does not adapt its step size cannot get there.
    assert!(best(&h) < 1e-6, "sphere: {}", best(&h));
    let h = run(&mut CmaesSampler::new(2), &space, 5000, &ellipsoid_shift);
    // Condition number 1e6: needs the covariance to be learned (random search: ~1e5);
    // CMA-ES needs about 5000 evaluations in 10-D.
    assert!(best(&h) < 1e-4, "ellipsoid: {}", best(&h));
}

#[test]
fn sep_cma_works_in_30d() {
    let space = float_space(30, -5.0, 5.0);
    let opts = CmaesOptions {
        use_separable: Some(true),
        ..Default::default()
    };
    let mut s = CmaesSampler::with_options(3, opts).unwrap();
    let h = run(&mut s, &space, 10_000, &ellipsoid_shift);
    assert!(s.run.as_ref().unwrap().es.sep);
    // The state stores the diagonal only.
    let saved = s.save_state().unwrap();
    assert_eq!(saved["cov"].as_array().unwrap().len(), 30);
    assert!(best(&h) < 1e-3, "sep ellipsoid 30-D: {}", best(&h));
    // Default: full covariance up to 40 parameters, separable above.
    let mut full = CmaesSampler::new(0);
    run(&mut full, &space, 1, &sphere_shift);
    assert!(!full.run.as_ref().unwrap().es.sep);
    let mut auto = CmaesSampler::new(0);
    run(&mut auto, &float_space(41, 0.0, 1.0), 1, &sphere_shift);
    assert!(auto.run.as_ref().unwrap().es.sep);
}

#[test]
fn ipop_restarts_on_a_flat_function_and_grows_the_population() {
    let space = float_space(3, 0.0, 1.0);
    let mut s = CmaesSampler::new(4);
    let p0 = default_popsize(3);
    run(&mut s, &space, 600, &|_| 1.0);
    assert!(s.restarts() >= 1, "no restart on a flat function");
    assert_eq!(s.popsize(), Some(p0 << s.restarts()));
    let saved = s.save_state().unwrap();
    assert!(
        saved["restarts"]["last_stop"]
            .as_str()
            .unwrap()
            .starts_with("flat"),
        "{saved}"
    );
    // With restarts off, the same run never restarts.
    let mut none = CmaesSampler::with_options(
        4,
        CmaesOptions {
            restart: Restart::None,
            ..Default::default()
        },
    )
    .unwrap();
    run(&mut none, &space, 600, &|_| 1.0);
    assert_eq!((none.restarts(), none.popsize()), (0, Some(p0)));
}

#[test]
fn restarts_after_convergence_and_bipop_alternates() {
    // A sharp unimodal function converges below the resolution within the budget.
    let space = float_space(2, -1.0, 1.0);
    let f = |p: &Params| xs(p).iter().map(|x| x * x).sum::<f64>();
    let mut s = CmaesSampler::with_options(
        5,
        CmaesOptions {
            restart: Restart::Bipop,
            ..Default::default()
        },
    )
    .unwrap();
    run(&mut s, &space, 3000, &f);
    assert!(s.restarts() >= 2, "restarts: {}", s.restarts());
    let r = &s.run.as_ref().unwrap().restarts;
    assert!(r.evals_small > 0 && r.evals_large > 0, "{r:?}");
}

#[test]
fn state_round_trip_continues_identically() {
    let space = float_space(5, -5.0, 5.0);
    let mut a = CmaesSampler::new(9);
    // 57 trials: several generations of 8, the last one open.
    let h = run(&mut a, &space, 57, &sphere_shift);
    let saved = a.save_state().unwrap();
    let text = serde_json::to_string(&saved).unwrap();
    let d = 5;
    assert_eq!(saved["cov"].as_array().unwrap().len(), d * (d + 1) / 2);
    let req = |n| SampleRequest {
        space: &space,
        history: &h,
        direction: Direction::Minimize,
        trial_number: n,
    };
    let next = a.sample(&req(57));
    // Rebuilt from the stored JSON text.
    let mut b = CmaesSampler::new(9);
    b.load_state(&serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(b.sample(&req(57)), next);
    assert_eq!(b.save_state(), a.save_state());
    // No state at all: replaying the history gives the same distribution.
    let mut c = CmaesSampler::new(9);
    assert_eq!(c.sample(&req(57)), next);
    assert_eq!(c.save_state(), a.save_state());
    // A stale state (saved 2 generations ago) catches up from the history.
    let mut old = CmaesSampler::new(9);
    let h_old = &h[..40];
    old.sample(&SampleRequest {
        space: &space,
        history: h_old,
        direction: Direction::Minimize,
        trial_number: 40,
    });
    let mut d2 = CmaesSampler::new(9);
    d2.load_state(&old.save_state().unwrap()).unwrap();
    assert_eq!(d2.sample(&req(57)), next);
    // Corrupt states are refused with a reason.
    let mut bad = saved.clone();
    bad["mean"] = serde_json::json!([0.5]);
    let e = CmaesSampler::new(9).load_state(&bad).unwrap_err();
    assert!(e.contains("dim 5"), "{e}");
    let e = CmaesSampler::new(9)
        .load_state(&serde_json::json!({"x": 1}))
        .unwrap_err();
    assert!(e.contains("cmaes state"), "{e}");
}

fn mixed_space() -> SearchSpace {
    SearchSpace::new([
        (
            "a".to_string(),
            Distribution::Float {
                low: -5.0,
                high: 5.0,
                log: false,
                step: None,
            },
        ),
        (
            "lr".to_string(),
            Distribution::Float {
                low: 1e-5,
                high: 1.0,
                log: true,
                step: None,
            },
        ),
        (
            "st".to_string(),
            Distribution::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: Some(0.1),
            },
        ),
        (
            "k1".to_string(),
            Distribution::Int {
                low: 1,
                high: 10,
                step: 1,
                log: false,
            },
        ),
        (
            "k2".to_string(),
            Distribution::Int {
                low: -10,
                high: 10,
                step: 5,
                log: false,
            },
        ),
        (
            "kl".to_string(),
            Distribution::Int {
                low: 1,
                high: 1000,
                step: 1,
                log: true,
            },
        ),
        (
            "c".to_string(),
            Distribution::Categorical {
                choices: ["a", "b", "c", "d"]
                    .iter()
                    .map(|s| Choice::Text(s.to_string()))
                    .collect(),
            },
        ),
        (
            "fixed".to_string(),
            Distribution::Int {
                low: 4,
                high: 4,
                step: 1,
                log: false,
            },
        ),
    ])
    .unwrap()
}

fn mixed_f(p: &Params) -> f64 {
    let cat = [0.0, 1.0, 2.5, 4.0][p["c"] as usize];
    (p["a"] - 1.5).powi(2) * (1.0 + 0.5 * cat)
        + (p["lr"].log10() + 3.0).powi(2)
        + (p["st"] - 0.3).powi(2) * 10.0
        + 0.5 * (p["k1"] - 7.0).powi(2)
        + 0.3 * (p["k2"] + 5.0).abs()
        + (p["kl"].ln() - 50f64.ln()).powi(2)
        + cat
}

#[test]
fn proposals_respect_bounds_steps_logs_and_choices_and_find_the_mixed_optimum() {
    let space = mixed_space();
    for seed in 0..3 {
        let mut s = CmaesSampler::new(seed);
        // `run` checks every proposal against the space.
        let h = run(&mut s, &space, 400, &mixed_f);
        assert!(h.iter().all(|t| t.params["fixed"] == 4.0));
        let b = h
            .iter()
            .min_by(|x, y| x.value.unwrap().total_cmp(&y.value.unwrap()))
            .unwrap();
        assert!(b.value.unwrap() < 0.5, "seed {seed}: {:?}", b);
        assert_eq!((b.params["k1"], b.params["c"]), (7.0, 0.0), "{b:?}");
        // The margin keeps every discrete coordinate able to move: the nearer inner edge of
        // the mean's cell is within q σ √C_jj, so a draw leaves the cell with probability
        // at least 1 / (d λ).
        let run_ = s.run.as_ref().unwrap();
        let layout = s.layout.as_ref().unwrap();
        let alpha = 1.0 / (layout.dim() as f64 * run_.popsize as f64);
        let q = linalg::normal_quantile(1.0 - alpha);
        for (j, a) in layout.axes.iter().enumerate() {
            let Some((lo, hi)) = a.cell(run_.es.mean[j]) else {
                continue;
            };
            let m = run_.es.mean[j];
            let reach = q * run_.es.sigma * run_.es.c_diag(j).sqrt();
            let near = [lo, hi]
                .into_iter()
                .filter(|e| *e > 1e-12 && *e < 1.0 - 1e-12)
                .map(|e| (m - e).abs())
                .fold(f64::INFINITY, f64::min);
            assert!(
                near <= reach * (1.0 + 1e-9),
                "{}: edge {near} > reach {reach}",
                a.name
            );
        }
        // The categorical fallback prefers the best choice late in the run.
        let a_late = h[300..].iter().filter(|t| t.params["c"] == 0.0).count();
        assert!(a_late > 50, "choice a only {a_late} of 100 late trials");
    }
}

#[test]
fn pruned_failed_and_unsafe_trials_are_ranked_and_never_stall() {
    let space = float_space(4, -5.0, 5.0);
    // No restarts: after convergence the search must stay out of the unsafe region.
    let opts = CmaesOptions {
        restart: Restart::None,
        ..Default::default()
    };
    let mut s = CmaesSampler::with_options(6, opts).unwrap();
    let mut history: Vec<FrozenTrial> = Vec::new();
    for number in 0..800u64 {
        let p = s.sample(&SampleRequest {
            space: &space,
            history: &history,
            direction: Direction::Maximize,
            trial_number: number,
        });
        space.check_params(&p).unwrap();
        let v = -sphere_shift(&p);
        let x = xs(&p);
        let mut t = trial(number, p, TrialState::Complete, Some(v));
        if x[0] < 0.0 {
            // Unsafe region (the optimum's x0 is 1.5, outside it): pruned unsafe, with
            // an excess that grows deeper in.
            t.state = TrialState::Pruned;
            t.value = None;
            t.prune_reason = Some("unsafe: roll 0.9 rad > 0.6".into());
            t.attrs
                .insert("unsafe".into(), serde_json::json!({ "excess": -x[0] }));
        } else if number % 7 == 3 {
            t.state = TrialState::Fail;
            t.value = None;
        } else if number % 5 == 1 {
            t.state = TrialState::Pruned;
            t.value = None;
            t.intermediate.insert(10, v - 1.0);
        }
        history.push(t);
    }
    assert!(s.updates() > 50, "updates: {}", s.updates());
    let best_complete = history
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .map(|t| t.value.unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(best_complete > -1e-3, "{best_complete}");
    let unsafe_late = history[600..]
        .iter()
        .filter(|t| t.state == TrialState::Pruned && t.attrs.contains_key("unsafe"))
        .count();
    assert!(
        unsafe_late < 40,
        "still {unsafe_late} unsafe trials late in the run"
    );
}

#[test]
fn ranking_order_and_all_failed_generation() {
    // One generation of 8 in 2-D, hand-made: the update must move the mean towards the
    // complete trials, away from unsafe and failed ones.
    let space = float_space(2, 0.0, 1.0);
    let mut s = CmaesSampler::with_options(
        0,
        CmaesOptions {
            popsize: Some(8),
            ..Default::default()
        },
    )
    .unwrap();
    fn req<'a>(space: &'a SearchSpace, h: &'a [FrozenTrial], n: u64) -> SampleRequest<'a> {
        SampleRequest {
            space,
            history: h,
            direction: Direction::Minimize,
            trial_number: n,
        }
    }
    // All failed: no update, the distribution stays.
    let mut h = Vec::new();
    for n in 0..8 {
        let p = s.sample(&req(&space, &h, n));
        h.push(trial(n, p, TrialState::Fail, None));
    }
    s.sample(&req(&space, &h, 8));
    assert_eq!(s.updates(), 0);
    assert_eq!(s.mean().unwrap(), &[0.5, 0.5]);
    assert_eq!(s.run.as_ref().unwrap().gen_start, 8);
    // Next generation: points at the corners; the only COMPLETE ones are near (1, 1).
    let pt = |a: f64, b: f64| -> Params { [("x00".into(), a), ("x01".into(), b)].into() };
    let mut unsafe_t = trial(9, pt(0.0, 0.0), TrialState::Pruned, None);
    unsafe_t.prune_reason = Some("unsafe".into());
    let mut poor = trial(10, pt(0.9, 0.1), TrialState::Pruned, None);
    poor.prune_reason = Some("poor".into());
    poor.intermediate.insert(3, 5.0);
    let gen = vec![
        trial(8, pt(0.8, 0.8), TrialState::Complete, Some(1.0)),
        unsafe_t,
        poor,
        trial(11, pt(0.7, 0.8), TrialState::Complete, Some(2.0)),
        trial(12, pt(0.1, 0.9), TrialState::Fail, None),
        trial(13, pt(0.1, 0.1), TrialState::Fail, None),
        trial(14, pt(0.0, 0.2), TrialState::Fail, None),
        trial(15, pt(0.2, 0.0), TrialState::Fail, None),
    ];
    h.extend(gen);
    s.sample(&req(&space, &h, 16));
    assert_eq!(s.updates(), 1);
    let m = s.mean().unwrap();
    assert!(m[0] > 0.55 && m[1] > 0.55, "mean {m:?}");
    // A RUNNING member keeps the generation open: more asks, same distribution.
    let before = s.save_state();
    h.push(trial(16, pt(0.5, 0.5), TrialState::Running, None));
    for n in 17..30 {
        let p = s.sample(&req(&space, &h, n));
        h.push(trial(n, p, TrialState::Complete, Some(0.0)));
    }
    assert_eq!(s.save_state(), before);
}

#[test]
fn warm_start_centres_on_the_source_optimum() {
    let space = float_space(3, -5.0, 5.0);
    let src = run(&mut RandomSampler::new(1), &space, 300, &sphere_shift);
    let w = warm_start_from(&src, &space, Direction::Minimize).unwrap();
    // The best 30 random points are around the shift (1.5, -2, 0.5) → cube (0.65, 0.3, 0.55).
    for (m, want) in w.mean().iter().zip([0.65, 0.3, 0.55]) {
        assert!((m - want).abs() < 0.12, "{:?}", w.mean());
    }
    assert!(w.sigma() < 0.2, "{}", w.sigma());
    let mut warm = CmaesSampler::new(2).with_warm_start(w);
    let h = run(&mut warm, &space, 30, &sphere_shift);
    let cold = run(&mut CmaesSampler::new(2), &space, 30, &sphere_shift);
    assert!(best(&h) < best(&cold), "{} vs {}", best(&h), best(&cold));
    assert!(warm_start_from(&[], &space, Direction::Minimize)
        .unwrap_err()
        .contains("no COMPLETE trial"));
}

#[test]
fn options_parse_validate_and_build() {
    let t: toml::Table = toml::from_str("popsize = 12\nrestart = \"bipop\"\nsigma0 = 0.3").unwrap();
    let s = crate::sampler::build("cmaes", 1, Some(&t)).unwrap();
    assert_eq!(s.name(), "cmaes");
    let o: CmaesOptions = crate::sampler::parse_options("cmaes", Some(&t)).unwrap();
    assert_eq!(
        (o.popsize, o.restart, o.sigma0),
        (Some(12), Restart::Bipop, Some(0.3))
    );
    let bad: toml::Table = toml::from_str("popsiz = 12").unwrap();
    let e = crate::sampler::build("cmaes", 1, Some(&bad)).err().unwrap();
    assert!(matches!(e, SamplerError::Parse { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.starts_with("sampler.cmaes: ") && e.contains("popsiz"),
        "{e}"
    );
    let bad: toml::Table = toml::from_str("sigma0 = 2.0").unwrap();
    let e = crate::sampler::build("cmaes", 1, Some(&bad)).err().unwrap();
    assert!(
        matches!(&e, SamplerError::Invalid { kind, key, .. } if kind == "cmaes" && key == "sigma0"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("sampler.cmaes.sigma0 = 2: must be in (0, 1]"),
        "{e}"
    );
    let bad: toml::Table = toml::from_str("restart = \"sometimes\"").unwrap();
    assert!(crate::sampler::build("cmaes", 1, Some(&bad)).is_err());
    let t: toml::Table = toml::from_str("safe_probability = 0.75").unwrap();
    let o: CmaesOptions = crate::sampler::parse_options("cmaes", Some(&t)).unwrap();
    assert_eq!(o.safe_probability, 0.75);
    assert_eq!(CmaesOptions::default().safe_probability, 0.9);
    let bad: toml::Table = toml::from_str("safe_probability = 1.0").unwrap();
    let e = crate::sampler::build("cmaes", 1, Some(&bad))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("sampler.cmaes.safe_probability = 1: must be in (0, 1)"),
        "{e}"
    );
}

#[test]
fn categorical_only_and_startup_trials() {
    let space = SearchSpace::new([(
        "c".to_string(),
        Distribution::Categorical {
            choices: vec![Choice::Number(1.0), Choice::Number(2.0)],
        },
    )])
    .unwrap();
    let h = run(&mut CmaesSampler::new(0), &space, 100, &|p| p["c"]);
    let zeros = h[50..].iter().filter(|t| t.params["c"] == 0.0).count();
    assert!(zeros > 30, "{zeros}");
    // Start-up trials are uniform (the random sampler's draws), then CMA-ES takes over.
    let space = float_space(2, 0.0, 1.0);
    let opts = CmaesOptions {
        n_startup_trials: 5,
        ..Default::default()
    };
    let h = run(
        &mut CmaesSampler::with_options(3, opts).unwrap(),
        &space,
        200,
        &sphere_shift,
    );
    let r = run(&mut RandomSampler::new(3), &space, 5, &sphere_shift);
    for i in 0..5 {
        assert_eq!(h[i].params, r[i].params);
    }
    let corner = sphere_shift(&[("x00".into(), 1.0), ("x01".into(), 0.0)].into());
    assert!(
        best(&h) < corner + 0.01,
        "{} vs {corner}: {:?}",
        best(&h),
        &h[190..]
    );
}

/// Prints median best values at 50/100/200 evaluations over 10 seeds for the reference
/// problems (d = 8): `cargo test --release --lib cmaes::tests::print_efficiency --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn print_efficiency() {
    let d = 8;
    let space = float_space(d, -5.0, 5.0);
    let sphere = |p: &Params| xs(p).iter().map(|x| x * x).sum::<f64>();
    let ellipsoid = |p: &Params| {
        let x = xs(p);
        x.iter()
            .enumerate()
            .map(|(i, v)| 10f64.powf(6.0 * i as f64 / 7.0) * v * v)
            .sum::<f64>()
    };
    let rastrigin_shift = |p: &Params| {
        xs(p)
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let z = x - SHIFT8[i];
                z * z - 10.0 * (std::f64::consts::TAU * z).cos() + 10.0
            })
            .sum::<f64>()
    };
    type Objective<'a> = &'a dyn Fn(&Params) -> f64;
    let problems: Vec<(&str, Objective)> = vec![
        ("sphere", &sphere),
        ("sphere_shift", &sphere_shift),
        ("ellipsoid", &ellipsoid),
        ("ellipsoid_shift", &ellipsoid_shift),
        ("rastrigin_shift", &rastrigin_shift),
    ];
    let sigmas: Vec<Option<f64>> = std::env::var("CMAES_SIGMAS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![None]);
    let elit: Vec<bool> = std::env::var("CMAES_ELITIST")
        .ok()
        .map(|s| s.split(',').map(|x| x == "1").collect())
        .unwrap_or(vec![true]);
    let pops: Vec<Option<usize>> = std::env::var("CMAES_POPS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![None]);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[4] + v[5]) / 2.0
    };
    for (name, f) in &problems {
        let at = |h: &[FrozenTrial], n: usize| best(&h[..n]);
        let mut rows = vec![];
        let rnd: Vec<Vec<FrozenTrial>> = (0..10)
            .map(|s| run(&mut RandomSampler::new(s), &space, 200, f))
            .collect();
        rows.push(("random".to_string(), rnd));
        for &sigma0 in &sigmas {
            for &popsize in &pops {
                for &elitist in &elit {
                    let runs = (0..10)
                        .map(|s| {
                            let o = CmaesOptions {
                                sigma0,
                                popsize,
                                elitist,
                                ..Default::default()
                            };
                            run(
                                &mut CmaesSampler::with_options(s, o).unwrap(),
                                &space,
                                200,
                                f,
                            )
                        })
                        .collect();
                    rows.push((
                        format!("cmaes s0={sigma0:?} pop={popsize:?} el={elitist}"),
                        runs,
                    ));
                }
            }
        }
        for (label, runs) in rows {
            println!(
                "{name:16} {label:28} @50 {:10.4e} @100 {:10.4e} @200 {:10.4e}",
                median(runs.iter().map(|h| at(h, 50)).collect()),
                median(runs.iter().map(|h| at(h, 100)).collect()),
                median(runs.iter().map(|h| at(h, 200)).collect()),
            );
        }
    }
}

#[test]
fn avoid_unsafe_cuts_unsafe_proposals_near_a_boundary_optimum() {
    // Minimise a sphere centred at x0 = 0.8 of [0, 1]^4, but x0 > 0.7 is unsafe: the
    // optimum sits on the boundary, where half of a search distribution falls over.
    let space = float_space(4, 0.0, 1.0);
    let run = |avoid: bool, seed: u64| {
        let mut s = CmaesSampler::with_options(
            seed,
            CmaesOptions {
                avoid_unsafe: avoid,
                ..CmaesOptions::default()
            },
        )
        .unwrap();
        let mut h: Vec<FrozenTrial> = Vec::new();
        let mut unsafe_n = 0;
        for i in 0..150u64 {
            let p = s.sample(&SampleRequest {
                space: &space,
                history: &h,
                direction: Direction::Minimize,
                trial_number: i,
            });
            let x = xs(&p);
            let t = if x[0] > 0.7 {
                unsafe_n += 1;
                let mut t = trial(i, p, TrialState::Pruned, None);
                t.prune_reason = Some("unsafe".into());
                t.attrs
                    .insert("unsafe".into(), serde_json::json!({ "excess": x[0] - 0.7 }));
                t
            } else {
                let v =
                    (x[0] - 0.8).powi(2) + x[1..].iter().map(|v| (v - 0.5).powi(2)).sum::<f64>();
                trial(i, p, TrialState::Complete, Some(v))
            };
            s.tell(&t);
            h.push(t);
        }
        unsafe_n
    };
    let with: usize = (0..5).map(|seed| run(true, seed)).sum();
    let without: usize = (0..5).map(|seed| run(false, seed)).sum();
    assert!(with * 3 < without * 2, "avoiding {with} vs not {without}");
}

#[test]
fn unsafe_trials_get_no_positive_weight_while_some_trial_was_safe() {
    // One generation: the proposal with the smallest x0 is safe, every other one fell.
    // With positive weights for feasible trials only, the new mean is that safe point
    // (μ = 1, c_m = 1); were the least-violating falls recombined too, it would not be.
    let space = float_space(3, 0.0, 1.0);
    let mut s = CmaesSampler::new(4);
    let ask = |s: &mut CmaesSampler, h: &[FrozenTrial], number: u64| {
        s.sample(&SampleRequest {
            space: &space,
            history: h,
            direction: Direction::Minimize,
            trial_number: number,
        })
    };
    let lambda = default_popsize(3) as u64;
    let gen: Vec<Params> = (0..lambda).map(|i| ask(&mut s, &[], i)).collect();
    let safest = (0..gen.len())
        .min_by(|&a, &b| xs(&gen[a])[0].total_cmp(&xs(&gen[b])[0]))
        .unwrap();
    let history: Vec<FrozenTrial> = gen
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == safest {
                trial(i as u64, p.clone(), TrialState::Complete, Some(1.0))
            } else {
                let mut t = trial(i as u64, p.clone(), TrialState::Pruned, None);
                t.prune_reason = Some("unsafe".into());
                t.attrs.insert(
                    "unsafe".into(),
                    serde_json::json!({ "excess": 0.01 * i as f64 }),
                );
                t
            }
        })
        .collect();
    ask(&mut s, &history, lambda);
    let layout = s.layout.as_ref().unwrap();
    let safe = layout.encode(&gen[safest]).unwrap();
    let mean = &s.run.as_ref().unwrap().es.mean;
    for (m, x) in mean.iter().zip(&safe) {
        assert!(
            (m - x).abs() < 1e-12,
            "mean {mean:?} vs the safe trial {safe:?}"
        );
    }
}
