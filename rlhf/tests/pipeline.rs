//! The whole recipe in miniature (`PipelineConfig::tiny`): every stage runs and writes its
//! folder, and the directions that already hold at this size are asserted. PPO above SFT
//! and its win rate do not hold reliably this small; rlhf/tests/ppo_beats_sft.rs asserts them
//! at the demo's size.

use model::checkpoint;
use model::tokenizer::Tokenizer;
use rlhf::pipeline::{run, Event, PipelineConfig, PpoReward};
use rlhf::policy::{compare, eval_seeds, evaluate_policy, repeated, score_gain, win_rate};
use rlhf::world::{Split, World};

#[test]
fn the_tiny_pipeline_runs_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let s = run(&PipelineConfig::tiny(), out, |_| {}).unwrap();

    for stage in ["pretrain", "sft", "rm", "ppo", "ppo_beta0", "dpo"] {
        let dir = out.join(stage);
        assert!(
            dir.join("config.json").exists(),
            "{stage} has no checkpoint"
        );
        assert!(
            dir.join("model.safetensors").exists(),
            "{stage} has no weights"
        );
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        assert!(metrics.lines().count() > 1, "{stage} logged nothing");
    }
    assert!(out.join("collect/rankings.jsonl").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["stages"].as_array().unwrap().len(), 4);

    // The report and every chart it links: each PNG decodes to a real image.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for plot in rlhf::pipeline::PLOTS {
        assert!(report.contains(plot), "report.md does not show {plot}");
        let file = std::fs::File::open(out.join(plot)).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert!(
            info.width >= 320 && info.height >= 200,
            "{plot}: {}x{}",
            info.width,
            info.height
        );
        assert!(pixels.iter().any(|&p| p < 128), "{plot} is blank");
    }

    let stage = |name: &str| s.stage(name).unwrap().clone();
    let (pre, sft) = (stage("pretrained"), stage("sft"));
    // SFT teaches the chat format: answers end properly and score higher with the labeler.
    assert!(
        sft.ended > pre.ended,
        "ended: pretrained {} sft {}",
        pre.ended,
        sft.ended
    );
    assert!(
        sft.mean_score > pre.mean_score,
        "score: pretrained {} sft {}",
        pre.mean_score,
        sft.mean_score
    );
    // SFT's answers are not all ideal, so the ideal answers beat them more often than not:
    // the ceiling the report prints for PPO's win rate is above a coin toss.
    assert!(
        s.ideal_win_rate_vs_sft.mean > 0.5,
        "ideal answers' win rate against SFT {:?}",
        s.ideal_win_rate_vs_sft
    );
    // Every rate and score difference comes with its 95% interval around it, and the
    // stage-by-stage differences agree with the table's scores.
    for e in [
        s.ppo_win_rate_vs_sft,
        s.dpo_win_rate_vs_sft.unwrap(),
        s.ideal_win_rate_vs_sft,
    ]
    .iter()
    .chain(s.score_gains.iter().map(|g| &g.gain))
    {
        assert!(e.low < e.mean && e.mean < e.high, "{e:?}");
    }
    // What each win rate is made of: the rubric's better, tied and worse add up to every pair;
    // the ideal answers are never worse than SFT's.
    for c in [
        s.ppo_vs_sft_by_rubric,
        s.dpo_vs_sft_by_rubric.unwrap(),
        s.ideal_vs_sft_by_rubric,
    ] {
        assert!((c.better + c.tied + c.worse - 1.0).abs() < 1e-12, "{c:?}");
    }
    assert_eq!(s.ideal_vs_sft_by_rubric.worse, 0.0);
    let gain = |name: &str| {
        let g = s.score_gains.iter().find(|g| g.stage == name).unwrap();
        let base = stage(&g.baseline).mean_score;
        (g.gain.mean, stage(name).mean_score - base)
    };
    for name in ["sft", "ppo", "dpo"] {
        let (paired, of_means) = gain(name);
        assert!(
            (paired - of_means).abs() < 1e-9,
            "{name}: {paired} vs {of_means}"
        );
    }
    // The checkpoints on disk reproduce the report's head-to-head exactly (what `ferrochat
    // judge --against` computes from them): the weights saved are the weights evaluated, and
    // the evaluation depends only on them, the settings and the run's seed.
    let c = PipelineConfig::tiny();
    let world = World::new(c.world_seed);
    let records = repeated(
        &world.prompts(Split::Heldout)[..c.eval_prompts],
        c.eval_samples,
    );
    let (sampling_seed, judging_seed) = eval_seeds(c.seed);
    let answers_of = |stage: &str| {
        let dir = out.join(stage);
        let (m, tok) = (
            checkpoint::load(&dir).unwrap(),
            Tokenizer::load(&dir).unwrap(),
        );
        evaluate_policy(
            &m,
            &tok,
            &records,
            c.eval_temperature,
            c.max_new_tokens,
            sampling_seed,
        )
        .unwrap()
        .1
    };
    let (ppo_answers, sft_answers) = (answers_of("ppo"), answers_of("sft"));
    assert_eq!(
        win_rate(&records, &ppo_answers, &sft_answers, judging_seed),
        s.ppo_win_rate_vs_sft
    );
    assert_eq!(
        compare(&records, &ppo_answers, &sft_answers),
        s.ppo_vs_sft_by_rubric
    );
    let ppo_gain = s.score_gains.iter().find(|g| g.stage == "ppo").unwrap();
    assert_eq!(
        score_gain(&records, &ppo_answers, &sft_answers),
        ppo_gain.gain
    );

    // The reward model learned something from the rankings (chance is 50%).
    assert!(
        s.rm_heldout_accuracy > 0.5,
        "RM accuracy {}",
        s.rm_heldout_accuracy
    );
    // The pretrained model picked up the corpus's rude replies; after SFT and PPO they are
    // rarer.
    let ppo = stage("ppo");
    assert!(
        pre.rude > 0.0 && ppo.rude < pre.rude,
        "rude: pretrained {} ppo {}",
        pre.rude,
        ppo.rude
    );
    // The KL penalty keeps PPO near SFT; without it (β = 0) the policy drifts further: the
    // mean KL of the last five iterations, from each run's metrics.
    assert!(
        s.ppo_final_kl.is_finite() && s.ppo_final_kl < 5.0,
        "KL {}",
        s.ppo_final_kl
    );
    let late_kl = |stage: &str| {
        let records = rlhf::report::read_metrics(out.join(stage).join("metrics.jsonl")).unwrap();
        let kl = rlhf::report::series(&records, "iteration", "kl");
        let last: Vec<f64> = kl.iter().rev().take(5).map(|&(_, y)| y).collect();
        last.iter().sum::<f64>() / last.len() as f64
    };
    let (with_beta, without) = (late_kl("ppo"), late_kl("ppo_beta0"));
    assert!(
        without > with_beta,
        "late KL: β = {} {with_beta}, β = 0 {without}",
        s.ppo_beta
    );
}

/// The options around the recipe: reusing a pretrained run (no pretraining again), PPO-ptx
/// on the world's corpus, the gold reward (the labeler's rubric score, minus 1), and SFT on
/// fewer demonstrations.
#[test]
fn a_rerun_reuses_the_pretrained_model_and_runs_ppo_ptx_against_the_gold_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let mut config = PipelineConfig::tiny();
    config.beta_zero = false;
    config.ppo_iterations = 2;
    config.pretrain.steps = 100;
    config.shape.n_embd = 64;
    let s1 = run(&config, &first, |_| {}).unwrap();

    // A folder that an earlier run with the β = 0 run left there: this run skips it, and says
    // that the folder is not its own.
    let second = tmp.path().join("second");
    std::fs::create_dir_all(second.join("ppo_beta0")).unwrap();
    config.pretrained = Some(first.join("pretrain"));
    config.ppo_reward = PpoReward::Gold;
    config.ppo.ptx_coef = 1.0;
    config.demonstrations = 40;
    let mut notes = Vec::new();
    let s2 = run(&config, &second, |e| {
        if let Event::Note(n) = e {
            notes.push(n)
        }
    })
    .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("reused")),
        "no reuse note in {notes:?}"
    );
    let stale = second.join("ppo_beta0").display().to_string();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&stale) && n.contains("earlier run")),
        "no note about {stale} in {notes:?}"
    );
    assert!(
        second.join("ppo_beta0").exists(),
        "the old folder was removed"
    );
    assert_eq!(s2.pretrain_val_loss, s1.pretrain_val_loss);
    assert!(s1.sft_demonstrations > 400, "{}", s1.sft_demonstrations);
    assert_eq!(s2.sft_demonstrations, 40);
    // SFT ran on those 40: one step per batch of 16, per epoch.
    let sft_steps = rlhf::report::read_metrics(second.join("sft/metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r.get("loss").is_some())
        .count();
    assert_eq!(sft_steps, config.sft.epochs * 40usize.div_ceil(16));
    for file in [
        "model.safetensors",
        "config.json",
        "metrics.jsonl",
        "vocab.json",
    ] {
        assert_eq!(
            std::fs::read(first.join("pretrain").join(file)).unwrap(),
            std::fs::read(second.join("pretrain").join(file)).unwrap(),
            "{file} differs"
        );
    }
    let records = rlhf::report::read_metrics(second.join("ppo/metrics.jsonl")).unwrap();
    let steps: Vec<_> = records
        .iter()
        .filter(|r| r.get("score").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for r in steps {
        let ptx = r["ptx_loss"].as_f64().unwrap();
        assert!(ptx > 0.5 && ptx < 10.0, "ptx loss {ptx}");
        // Gold scores are rubric scores minus 1, in [-1, 0], less 1 for an unended answer.
        let score = r["score"].as_f64().unwrap();
        assert!((-2.0..=0.0).contains(&score), "gold score {score}");
    }

    // A folder that is not a pretraining run is one clear error, naming the file.
    config.pretrained = Some(tmp.path().join("nothing-here"));
    let err = run(&config, &tmp.path().join("third"), |_| {}).unwrap_err();
    assert!(err.to_string().contains("nothing-here"), "{err}");
}
