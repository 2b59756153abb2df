//! Tests of the task world, the corpus, the simulated labeler and the JSONL formats.

use engine::Rng;
use rlhf::chat::{self, Answer, ASSISTANT, END, ENDOFTEXT, USER};
use rlhf::corpus::{self, BEHAVIOUR_MIX, FORMAT_IGNORED};
use rlhf::data::{self, DataError, Demonstration, JsonlWriter, Pair, Ranking};
use rlhf::labeler::{self, judge, pairwise_agreement, Labeler};
use rlhf::world::{self, Behaviour, Kind, Op, PromptRecord, Split, Style, Task, World};
use std::collections::BTreeSet;

fn all_prompts(w: &World) -> impl Iterator<Item = &PromptRecord> {
    w.train.iter().chain(&w.heldout)
}

fn behaviour_share(b: Behaviour) -> f64 {
    BEHAVIOUR_MIX.iter().find(|(x, _)| *x == b).unwrap().1
}

#[test]
fn same_seed_same_world_and_corpus() {
    let (a, b) = (World::new(7), World::new(7));
    assert_eq!(a.train, b.train);
    assert_eq!(a.heldout, b.heldout);
    assert_eq!(a.entities, b.entities);
    let c1 = rlhf::corpus(7, 300_000);
    let c2 = rlhf::corpus(7, 300_000);
    assert!(c1.len() >= 300_000);
    assert_eq!(c1, c2);
    let other = World::new(8);
    assert_ne!(a.facts(), other.facts(), "different seeds, different facts");
    assert_ne!(c1, rlhf::corpus(8, 300_000));
}

#[test]
fn mixes_are_distributions() {
    let behaviours: f64 = BEHAVIOUR_MIX.iter().map(|(_, p)| p).sum();
    assert!((behaviours - 1.0).abs() < 1e-12, "{behaviours}");
    let docs = corpus::FACT_DOCS + corpus::STORY_DOCS + corpus::WORKED_DOCS + corpus::CHAT_DOCS;
    assert!((docs - 1.0).abs() < 1e-12, "{docs}");
}

#[test]
fn demonstrations_are_ideal_completions_that_end() {
    let w = World::new(5);
    for split in [Split::Train, Split::Heldout] {
        let demos = w.demonstrations(split);
        assert_eq!(demos.len(), w.prompts(split).len());
        for (d, r) in demos.iter().zip(w.prompts(split)) {
            assert_eq!(d.prompt, r.prompt);
            assert_eq!(d.completion, format!("{}{END}", r.ideal));
            assert_eq!(
                chat::parse_completion(&d.completion),
                Answer::ended(r.ideal.clone())
            );
        }
    }
}

#[test]
fn every_kind_has_train_and_heldout_prompts_that_are_disjoint() {
    let w = World::new(1);
    let train: BTreeSet<&str> = w.train.iter().map(|r| r.prompt.as_str()).collect();
    let held: BTreeSet<&str> = w.heldout.iter().map(|r| r.prompt.as_str()).collect();
    assert_eq!(train.len(), w.train.len(), "train prompts are unique");
    assert_eq!(held.len(), w.heldout.len(), "held-out prompts are unique");
    assert!(train.is_disjoint(&held));
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        assert_eq!(kind.index(), i, "{kind:?}'s place in Kind::ALL");
        let n_train = w.train.iter().filter(|r| r.kind() == kind).count();
        let n_held = w.heldout.iter().filter(|r| r.kind() == kind).count();
        assert!(n_train >= 30 && n_held >= 8, "{kind:?}: {n_train}/{n_held}");
    }
    for r in all_prompts(&w) {
        let (split, found) = w.lookup(&r.prompt).unwrap();
        assert_eq!(found, r);
        let expected = if train.contains(r.prompt.as_str()) {
            Split::Train
        } else {
            Split::Heldout
        };
        assert_eq!(split, expected);
    }
    assert!(w.lookup("What is 100 plus 1?").is_none());
}

#[test]
fn prompts_and_answers_are_short_and_vocabularies_disjoint() {
    let w = World::new(3);
    for r in all_prompts(&w) {
        assert!(r.prompt.len() + r.ideal.len() < 100, "{r:?}");
    }
    let mut seen = BTreeSet::new();
    for word in world::words() {
        assert!(seen.insert(word), "{word} is in two lists");
        assert_ne!(world::reversed(word), word, "{word} is a palindrome");
        assert!(!labeler::is_rude(word));
    }
}

#[test]
fn ideal_answers_score_maximal_and_rank_first() {
    let w = World::new(11);
    let mut rng = Rng::new(5);
    let labeler = Labeler::noiseless();
    for r in all_prompts(&w) {
        let j = judge(r, &r.ideal, true);
        assert!(j.correct && j.format_ok && j.polite && j.ended, "{r:?}");
        assert_eq!(j.concise, 1.0);
        assert_eq!(j.total, 1.0, "{r:?}");
        let mut answers = vec![Answer::ended(r.ideal.clone())];
        for b in Behaviour::ALL {
            let same_as_ideal =
                b == Behaviour::Good || (b == Behaviour::BadFormat && r.kind() != Kind::Format);
            if !same_as_ideal {
                answers.push(w.respond(r, b, &mut rng));
            }
        }
        for a in &answers[1..] {
            assert!(labeler::score(r, &a.text, a.ended) < 1.0, "{r:?} {a:?}");
        }
        let order = labeler.rank(r, &answers, &mut rng);
        assert_eq!(order[0], 0, "{}: {answers:?} ranked {order:?}", r.prompt);
    }
}

#[test]
fn each_behaviour_fails_the_point_it_should() {
    let w = World::new(2);
    let mut rng = Rng::new(9);
    for r in &w.train {
        let get = |b, rng: &mut Rng| {
            let a = w.respond(r, b, rng);
            (judge(r, &a.text, a.ended), a)
        };
        let (j, a) = get(Behaviour::Wrong, &mut rng);
        assert!(!j.correct && j.polite && j.ended, "{a:?}");
        let (j, a) = get(Behaviour::Ignore, &mut rng);
        assert!(!j.correct && j.polite && j.ended, "{a:?}");
        let (j, a) = get(Behaviour::Rude, &mut rng);
        assert!(!j.polite && j.ended, "{a:?}");
        let (j, a) = get(Behaviour::Rambling, &mut rng);
        assert!(j.correct && j.polite && j.ended && j.concise < 1.0, "{a:?}");
        let (j, a) = get(Behaviour::Unended, &mut rng);
        assert!(j.correct && !j.ended && j.concise < 1.0, "{a:?}");
        assert!(
            a.text.len() > world::RUN_ON_CHARS,
            "runs on past the context: {a:?}"
        );
        if r.kind() == Kind::Format {
            let (j, a) = get(Behaviour::BadFormat, &mut rng);
            assert!(j.correct && !j.format_ok && j.polite, "{a:?}");
        }
    }
}

fn record(task: Task) -> PromptRecord {
    PromptRecord::new(task)
}

#[test]
fn rubric_is_lexicographic() {
    let add = record(Task::Arithmetic {
        a: 3,
        op: Op::Plus,
        b: 4,
    });
    assert_eq!(add.prompt, "What is 3 plus 4?");
    assert_eq!(add.ideal, "3 plus 4 is 7.");
    let s = |r: &PromptRecord, t: &str, ended| labeler::score(r, t, ended);
    // (1) correct beats wrong, however rude, rambling and unended the correct one is.
    let correct_rude_rambling_unended = format!(
        "Whatever, stupid question. 3 plus 4 is 7. {}",
        "The fox is red. ".repeat(20)
    );
    assert!(s(&add, &correct_rude_rambling_unended, false) > s(&add, "3 plus 4 is 8.", true));
    // (3) polite beats rude when both are correct, even if the polite one rambles and runs on.
    let polite_rambling = format!("3 plus 4 is 7. {}", "The fox is red. ".repeat(20));
    assert!(s(&add, &polite_rambling, false) > s(&add, "Whatever. 3 plus 4 is 7.", true));
    // (4) ended beats unended; concise beats rambling.
    assert!(s(&add, "3 plus 4 is 7.", true) > s(&add, "3 plus 4 is 7.", false));
    assert!(s(&add, "3 plus 4 is 7.", true) > s(&add, &polite_rambling, true));
    // (2) format beats politeness.
    let caps = record(Task::Format {
        entity: "fox".into(),
        attr: world::Attr::Color,
        value: "red".into(),
        style: Style::Capitals,
    });
    assert_eq!(caps.ideal, "THE FOX IS RED.");
    assert!(s(&caps, "UGH. THE FOX IS RED.", true) > s(&caps, "The fox is red.", true));
    assert!(s(&caps, "The fox is red.", true) > s(&caps, "THE FOX IS BLUE.", true));
    let b = judge(&caps, "ugh, the fox is red", false);
    assert!(b.correct && !b.format_ok && !b.polite && !b.ended);
}

#[test]
fn checkers_read_the_first_claimed_answer() {
    let add = record(Task::Arithmetic {
        a: 3,
        op: Op::Plus,
        b: 4,
    });
    let c = |r: &PromptRecord, t: &str| judge(r, t, true).correct;
    assert!(c(&add, "7"));
    assert!(c(&add, "It is seven."));
    assert!(c(&add, "What is 3 + 4? 7."));
    assert!(c(&add, "Whatever. 3 plus 4 is 7."));
    assert!(
        !c(&add, "3 plus 4 is 8. Or 7."),
        "only the first answer counts"
    );
    assert!(!c(&add, "3"));
    assert!(!c(&add, "The fox is red."));
    let sub = record(Task::Arithmetic {
        a: 7,
        op: Op::Minus,
        b: 0,
    });
    assert!(c(&sub, "7 minus 0 is 7."));
    let sort = record(Task::Sort {
        numbers: vec![5, 2, 8],
    });
    assert!(c(&sort, "2 5 8"));
    assert!(c(&sort, "Sorted 5, 2, 8 gives 2, 5 and 8."));
    assert!(!c(&sort, "5, 2, 8."));
    assert!(!c(&sort, "2, 8, 5. 2, 5, 8."));
    let rev = record(Task::Reverse { word: "fox".into() });
    assert!(c(&rev, "XOF"));
    assert!(!c(&rev, "The word fox reversed is oxf."));
    assert!(!c(&rev, "fox"));
    let spell = record(Task::Spell {
        word: "goat".into(),
    });
    assert!(c(&spell, "G O A T."));
    assert!(c(&spell, "goat: g-o-a-t"));
    assert!(!c(&spell, "g-o-a"));
    assert!(!c(&spell, "g-o-t-a, g-o-a-t"));
    let count = record(Task::Count {
        items: vec!["fox".into(), "owl".into(), "cat".into()],
    });
    assert!(c(&count, "Three."));
    assert!(!c(&count, "There are 4 words."));
    let fact = record(Task::Fact {
        entity: "owl".into(),
        attr: world::Attr::Home,
        value: "cave".into(),
    });
    assert_eq!(fact.prompt, "Where does the owl live?");
    assert!(c(&fact, "In the CAVE."));
    assert!(!c(&fact, "The owl lives in the barn, or the cave."));
    assert!(!c(&fact, "The owl is red."));
}

#[test]
fn rude_detector_matches_whole_words() {
    assert!(labeler::is_rude("Whatever."));
    assert!(labeler::is_rude("FIGURE IT OUT YOURSELF"));
    assert!(labeler::is_rude("ok, shut   up"));
    assert!(!labeler::is_rude("The fox is red."));
    assert!(!labeler::is_rude("stupidity is not a rude word here"));
    let answers = ["The fox is red.", "Ugh.", "7", "Go away."];
    assert_eq!(labeler::rude_rate(&answers), 0.5);
    assert_eq!(labeler::rude_rate::<&str>(&[]), 0.0);
}

#[test]
fn chat_format_round_trips() {
    let p = chat::chat_prompt("What is 3 plus 4?");
    assert_eq!(p, "<|user|>What is 3 plus 4?<|assistant|>");
    let ex = chat::chat_example("What is 3 plus 4?", "3 plus 4 is 7.");
    assert_eq!(ex, format!("{p}3 plus 4 is 7.{END}"));
    let a = chat::parse_completion("3 plus 4 is 7.<|end|><|user|>more");
    assert_eq!(a, Answer::ended("3 plus 4 is 7."));
    let a = chat::parse_completion("3 plus 4 is 7.<|user|>What<|end|>");
    assert_eq!(a, Answer::unended("3 plus 4 is 7."));
    let a = chat::parse_completion("3 plus 4 is 7. The fox");
    assert_eq!(a, Answer::unended("3 plus 4 is 7. The fox"));
}

/// Counts of corpus assistant turns, classified by the rubric.
#[derive(Default, Debug)]
struct TurnCounts {
    total: usize,
    good: usize,
    bad_format: usize,
    rude: usize,
    rambling: usize,
    wrong: usize,
    unended: usize,
}

fn count_turns(w: &World, corpus: &str) -> TurnCounts {
    let mut n = TurnCounts::default();
    for doc in corpus.split(ENDOFTEXT) {
        let mut rest = doc;
        while let Some(u) = rest.find(USER) {
            let turn = &rest[u + USER.len()..];
            let a = turn.find(ASSISTANT).expect("user turn without assistant");
            let prompt = &turn[..a];
            let (split, r) = w.lookup(prompt).expect("corpus prompt from the world");
            assert_eq!(
                split,
                Split::Train,
                "chat transcripts use train prompts only"
            );
            let completion = &turn[a + ASSISTANT.len()..];
            let answer = chat::parse_completion(completion);
            let j = judge(r, &answer.text, answer.ended);
            n.total += 1;
            if !answer.ended {
                n.unended += 1;
            } else if !j.polite {
                n.rude += 1;
            } else if !j.correct {
                n.wrong += 1;
            } else if !j.format_ok {
                n.bad_format += 1;
            } else if j.concise < 1.0 {
                n.rambling += 1;
            } else {
                n.good += 1;
            }
            rest = &completion[answer.text.len()..];
        }
    }
    n
}

#[test]
fn corpus_shows_each_behaviour_at_its_documented_rate() {
    let w = World::new(4);
    let corpus = w.corpus(2_000_000, &mut Rng::new(4).fork(3));
    let n = count_turns(&w, &corpus);
    let share = |k: &dyn Fn(&PromptRecord) -> bool| {
        w.train.iter().filter(|r| k(r)).count() as f64 / w.train.len() as f64
    };
    let f_format = share(&|r| r.kind() == Kind::Format);
    let f_oneword = share(&|r| {
        matches!(
            r.task,
            Task::Format {
                style: Style::OneWord,
                ..
            }
        )
    });
    let good = behaviour_share(Behaviour::Good);
    let rambling = behaviour_share(Behaviour::Rambling);
    // Rambling on a one-word prompt also breaks the format; it is counted there.
    let expected = [
        ("good", n.good, good * (1.0 - FORMAT_IGNORED * f_format)),
        (
            "bad_format",
            n.bad_format,
            good * FORMAT_IGNORED * f_format + rambling * f_oneword,
        ),
        ("rude", n.rude, behaviour_share(Behaviour::Rude)),
        ("rambling", n.rambling, rambling * (1.0 - f_oneword)),
        (
            "wrong+ignore",
            n.wrong,
            behaviour_share(Behaviour::Wrong) + behaviour_share(Behaviour::Ignore),
        ),
        ("unended", n.unended, behaviour_share(Behaviour::Unended)),
    ];
    assert!(n.total > 5000, "{n:?}");
    println!("{} assistant turns in 2 MB", n.total);
    for (name, count, want) in expected {
        let got = count as f64 / n.total as f64;
        println!("{name:<13} measured {got:.3}  expected {want:.3}");
        assert!((got - want).abs() < 0.025, "{name}: {got:.3} vs {want:.3}");
    }
    let docs = corpus.split(ENDOFTEXT).filter(|d| !d.is_empty()).count();
    println!("{docs} documents");
}

/// K answers to `r` with pairwise different rubric scores, or None if the behaviours did not
/// give that many.
fn distinct_answers(w: &World, r: &PromptRecord, k: usize, rng: &mut Rng) -> Option<Vec<Answer>> {
    let mut answers: Vec<Answer> = Vec::new();
    let mut scores: Vec<f64> = Vec::new();
    for _ in 0..100 {
        let b = Behaviour::ALL[rng.below(Behaviour::ALL.len() as u64) as usize];
        let a = w.respond(r, b, rng);
        let s = labeler::score(r, &a.text, a.ended);
        if !scores.contains(&s) {
            scores.push(s);
            answers.push(a);
            if answers.len() == k {
                return Some(answers);
            }
        }
    }
    None
}

#[test]
fn two_noisy_labelers_agree_on_73_percent_of_pairs() {
    let w = World::new(6);
    let labeler = Labeler::instructgpt();
    let mut rng = Rng::new(6);
    let (mut r1, mut r2) = (Rng::new(100), Rng::new(200));
    for k in [4, 6, 9] {
        let (mut sum, mut rankings) = (0.0, 0);
        for r in w.train.iter().cycle().take(3000) {
            let Some(answers) = distinct_answers(&w, r, k, &mut rng) else {
                continue;
            };
            let a = labeler.rank(r, &answers, &mut r1);
            let b = labeler.rank(r, &answers, &mut r2);
            sum += pairwise_agreement(&a, &b);
            rankings += 1;
        }
        let agreement = sum / rankings as f64;
        let expected = labeler::expected_agreement(labeler.noise_std(k), k);
        println!(
            "K={k}: sigma {:.3}, {rankings} rankings, agreement {agreement:.3} (closed form {expected:.3})",
            labeler.noise_std(k)
        );
        assert!(rankings > 1000);
        assert!((agreement - 0.73).abs() < 0.05, "K={k}: {agreement}");
    }
    // With answers drawn as the corpus mixes them (exact ties possible): reported, and
    // agreement with the noiseless order shows the noise is not the whole story.
    let (mut with_truth, mut between, mut n) = (0.0, 0.0, 0);
    let noiseless = Labeler::noiseless();
    for r in w.train.iter().take(2000) {
        let answers: Vec<Answer> = (0..4)
            .map(|_| {
                let b = BEHAVIOUR_MIX[rng.below(BEHAVIOUR_MIX.len() as u64) as usize].0;
                w.respond(r, b, &mut rng)
            })
            .collect();
        let truth = noiseless.rank(r, &answers, &mut rng);
        let a = labeler.rank(r, &answers, &mut r1);
        let b = labeler.rank(r, &answers, &mut r2);
        with_truth += pairwise_agreement(&a, &truth);
        between += pairwise_agreement(&a, &b);
        n += 1;
    }
    println!(
        "K=4 random behaviours (ties possible): labeler-labeler {:.3}, labeler-truth {:.3}",
        between / n as f64,
        with_truth / n as f64
    );
    assert!(with_truth / n as f64 > between / n as f64);
}

#[test]
fn noiseless_labeler_agrees_with_itself_and_bad_agreement_is_refused() {
    let w = World::new(6);
    let r = &w.train[0];
    let mut rng = Rng::new(1);
    let answers = distinct_answers(&w, r, 4, &mut rng).unwrap();
    let l = Labeler::noiseless();
    let a = l.rank(r, &answers, &mut Rng::new(1));
    let b = l.rank(r, &answers, &mut Rng::new(2));
    assert_eq!(a, b);
    assert_eq!(l.noise_std(4), 0.0);
    let completions: Vec<String> = answers.iter().map(Answer::completion).collect();
    let ranking = l.ranking(r, completions.clone(), &mut Rng::new(3));
    assert_eq!(ranking.responses, completions);
    assert_eq!(
        ranking.ranking, a,
        "parsing completions keeps each answer's `ended`"
    );
    assert!(ranking.ties.is_empty(), "distinct scores, no ties");
    assert_eq!(ranking.pairs().len(), 6);
    assert!(Labeler::new(0.5).is_err());
    assert!(Labeler::new(1.2).is_err());
    assert_eq!(Labeler::new(0.9).unwrap().agreement, 0.9);
}

#[test]
fn exact_ties_are_listed_and_left_out_of_pairs() {
    let w = World::new(6);
    let r = w
        .train
        .iter()
        .find(|r| r.kind() == Kind::Arithmetic)
        .unwrap();
    let Task::Arithmetic { a, op, b } = r.task else {
        unreachable!()
    };
    let right = op.apply(a, b);
    // Two wrong answers of the same length score the same; the ideal beats both.
    let completions = vec![
        format!("{a} {} {b} is {}.{END}", op.word(), right + 20),
        format!("{}{END}", r.ideal),
        format!("{a} {} {b} is {}.{END}", op.word(), right + 30),
    ];
    let ranking = Labeler::instructgpt().ranking(r, completions, &mut Rng::new(4));
    assert_eq!(ranking.ties, vec![[0, 2]]);
    assert!(ranking.tied(2, 0));
    let pairs = ranking.pairs();
    assert_eq!(pairs.len(), 2, "{pairs:?}");
    assert!(pairs.iter().all(|p| p.chosen != p.rejected));
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn jsonl_round_trips_and_appends() {
    let w = World::new(0);
    let demos = w.demonstrations(Split::Train);
    let path = temp_path("demos.jsonl");
    data::write_jsonl(&path, &demos[..10]).unwrap();
    let mut writer = JsonlWriter::append(&path).unwrap();
    for d in &demos[10..20] {
        writer.write(d).unwrap();
    }
    drop(writer);
    let back: Vec<Demonstration> = data::read_jsonl(&path).unwrap();
    assert_eq!(back, demos[..20].to_vec(), "appending kept the first lines");

    // A last line without its newline (a hand edit) is not run into by the next record.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.trim_end()).unwrap();
    JsonlWriter::append(&path)
        .unwrap()
        .write(&demos[20])
        .unwrap();
    let back: Vec<Demonstration> = data::read_jsonl(&path).unwrap();
    assert_eq!(
        back,
        demos[..21].to_vec(),
        "the unterminated line was kept whole"
    );
    // write_jsonl replaces the whole file.
    data::write_jsonl(&path, &demos[..3]).unwrap();
    let back: Vec<Demonstration> = data::read_jsonl(&path).unwrap();
    assert_eq!(back, demos[..3].to_vec(), "write_jsonl replaced the file");

    let ranking = Ranking {
        prompt: "What is 3 plus 4?".into(),
        responses: vec!["7".into(), "8".into(), "Whatever. 7".into()],
        ranking: vec![0, 2, 1],
        ties: vec![],
    };
    let rpath = temp_path("rankings.jsonl");
    data::write_jsonl(&rpath, std::slice::from_ref(&ranking)).unwrap();
    assert_eq!(data::read_rankings(&rpath).unwrap(), vec![ranking.clone()]);
    let pairs = ranking.pairs();
    assert_eq!(pairs.len(), 3);
    assert_eq!(
        pairs[0],
        Pair {
            prompt: ranking.prompt.clone(),
            chosen: "7".into(),
            rejected: "Whatever. 7".into()
        }
    );
    let ppath = temp_path("pairs.jsonl");
    data::write_jsonl(&ppath, &pairs).unwrap();
    assert_eq!(data::read_jsonl::<Pair>(&ppath).unwrap(), pairs);
}

#[test]
fn malformed_lines_are_errors_naming_file_and_line() {
    let path = temp_path("bad.jsonl");
    let good = r#"{"prompt":"p","completion":"c"}"#;
    std::fs::write(&path, format!("{good}\n\n{{\"prompt\": \"p\"\n{good}\n")).unwrap();
    let err = data::read_jsonl::<Demonstration>(&path).unwrap_err();
    assert!(
        matches!(err, DataError::Malformed { line: 3, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:3: ", path.display())), "{msg}");

    let rpath = temp_path("bad_rankings.jsonl");
    let ok = r#"{"prompt":"p","responses":["a","b"],"ranking":[1,0]}"#;
    let dup = r#"{"prompt":"p","responses":["a","b"],"ranking":[1,1]}"#;
    std::fs::write(&rpath, format!("{ok}\n{dup}\n")).unwrap();
    let err = data::read_rankings(&rpath).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 2, .. }), "{err}");
    let bad_tie = r#"{"prompt":"p","responses":["a","b"],"ranking":[1,0],"ties":[[1,0]]}"#;
    std::fs::write(&rpath, format!("{ok}\n{ok}\n\n{bad_tie}\n")).unwrap();
    let err = data::read_rankings(&rpath).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 4, .. }), "{err}");
    let missing = data::read_jsonl::<Pair>(temp_path("missing.jsonl")).unwrap_err();
    assert!(matches!(missing, DataError::Io { .. }), "{missing}");
}

#[test]
fn judging_arbitrary_text_stays_in_range() {
    let w = World::new(12);
    let mut rng = Rng::new(12);
    let pieces = [
        "7",
        " ",
        "-",
        ",",
        "é",
        "→",
        "fox",
        "XOF",
        "<|end|>",
        "plus",
        "and",
        "ugh",
        ".",
        "f",
        "seven",
        "99999999999999999999999",
        "\n",
        "The",
        "caves",
    ];
    for r in w.train.iter().take(300) {
        for _ in 0..20 {
            let n = rng.below(12);
            let text: String = (0..n)
                .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
                .collect();
            for ended in [false, true] {
                let s = labeler::score(r, &text, ended);
                assert!((0.0..=1.0).contains(&s), "{text:?}: {s}");
            }
        }
    }
}
