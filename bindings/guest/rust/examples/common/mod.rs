//! Command-line flags shared by the examples (the meanings of `pyllmc train`'s flags).

use std::process::exit;

pub struct Options {
    pub data: String,
    pub out: String,
    pub tokenizer: Option<String>,
    pub prompt: String,
    pub schedule: String,
    pub depth: i32,
    pub vocab_size: i32,
    pub max_seq_len: i32,
    pub steps: i32,
    pub batch: i32,
    pub seq: i32,
    pub warmup: i32,
    pub threads: i32,
    pub eval_every: i32,
    pub eval_batches: i32,
    pub save_every: i32,
    pub sample_tokens: i32,
    pub seed: i64,
    pub lr: f64,
}

pub const USAGE: &str = "\
flags: [--data DIR] [--out DIR] [--model dN] [--vocab-size V] [--max-seq-len N]
       [--steps N] [--batch B] [--seq T] [--lr LR] [--schedule S] [--warmup N]
       [--seed S] [--threads N] [--eval-every K] [--eval-batches K] [--save-every K]
       [--tokenizer byte|PATH] [--prompt TEXT] [--sample-tokens N]
defaults: --data /data --out /runs/guest --model d2 --vocab-size 257 --max-seq-len 64
          --steps 20 --batch 4 --seq 64 --lr 1e-3 --schedule cosine --eval-batches 4
          --tokenizer DATA/tokenizer.bin if it exists, else byte";

fn fail(program: &str, msg: String) -> ! {
    eprintln!("{}: {}", program, msg);
    exit(2)
}

fn int<T: std::str::FromStr + PartialOrd + std::fmt::Display>(program: &str, flag: &str, v: &str, lo: T) -> T {
    match v.parse::<T>() {
        Ok(x) if x >= lo => x,
        _ => fail(program, format!("{}: expected an integer >= {}, got '{}'", flag, lo, v)),
    }
}

pub fn parse(program: &str) -> Options {
    let mut o = Options {
        data: "/data".into(),
        out: "/runs/guest".into(),
        tokenizer: None,
        prompt: String::new(),
        schedule: "cosine".into(),
        depth: 2,
        vocab_size: 257,
        max_seq_len: 64,
        steps: 20,
        batch: 4,
        seq: 64,
        warmup: 0,
        threads: 0,
        eval_every: 0,
        eval_batches: 4,
        save_every: 0,
        sample_tokens: 64,
        seed: 0,
        lr: 1e-3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "-h" || a == "--help" {
            println!("usage: {} {}", program, USAGE);
            exit(0);
        }
        let v = match args.get(i + 1) {
            Some(v) if a.starts_with("--") => v.as_str(),
            _ => fail(program, format!("unknown argument or missing value: '{}'\n{}", a, USAGE)),
        };
        match a {
            "--data" => o.data = v.into(),
            "--out" => o.out = v.into(),
            "--tokenizer" => o.tokenizer = Some(v.into()),
            "--prompt" => o.prompt = v.into(),
            "--schedule" => o.schedule = v.into(),
            "--model" => {
                let n = v.strip_prefix('d').or_else(|| v.strip_prefix('D'));
                match n.and_then(|n| n.parse::<i32>().ok()) {
                    Some(n) if (1..=48).contains(&n) => o.depth = n,
                    _ => fail(program, format!("--model: expected a size dN (e.g. d2), got '{}'", v)),
                }
            }
            "--vocab-size" => o.vocab_size = int(program, a, v, 1),
            "--max-seq-len" => o.max_seq_len = int(program, a, v, 1),
            "--steps" => o.steps = int(program, a, v, 1),
            "--batch" => o.batch = int(program, a, v, 1),
            "--seq" => o.seq = int(program, a, v, 1),
            "--warmup" => o.warmup = int(program, a, v, 0),
            "--threads" => o.threads = int(program, a, v, 0),
            "--eval-every" => o.eval_every = int(program, a, v, 0),
            "--eval-batches" => o.eval_batches = int(program, a, v, 1),
            "--save-every" => o.save_every = int(program, a, v, 0),
            "--sample-tokens" => o.sample_tokens = int(program, a, v, 0),
            "--seed" => o.seed = int(program, a, v, 0),
            "--lr" => match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => o.lr = x,
                _ => fail(program, format!("--lr: expected a finite number >= 0, got '{}'", v)),
            },
            _ => fail(program, format!("unknown flag '{}'\n{}", a, USAGE)),
        }
        i += 2;
    }
    o
}
