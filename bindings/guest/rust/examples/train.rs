//! A guest that trains a small GPT-2 on the host, start to finish: a model of size dN, the
//! shards in DATA (train_*.bin; val_*.bin when there are any), a training job whose progress
//! it prints while it runs, then an evaluation, a sample and the final parameters saved as
//! an llm.c checkpoint (OUT/final.bin; the Trainer's checkpoints and metrics.jsonl are in
//! OUT too).
//!
//!     RUSTC=/usr/bin/rustc cargo build --offline --release --target wasm32-wasi --example train
//!     pyllmc wasm run target/wasm32-wasi/release/examples/train.wasm \
//!         --dir data::/data --dir runs::/runs -- --steps 50
//!
//! With the same settings, the run is bit for bit the one of
//! `pyllmc train --model d2 --vocab-size 257 --max-seq-len 64 ...`.

mod common;

use std::path::Path;
use std::process::exit;

use pyllmc_guest::{check_abi, DataLoader, JobState, Model, ModelConfig, Result, SampleOptions, Tokenizer,
                   TrainConfig};

fn run(o: &common::Options) -> Result<i32> {
    check_abi()?;
    let config = ModelConfig::from_size(o.depth, o.vocab_size, o.max_seq_len);
    let mut model = Model::create(&config, o.seed)?;
    println!("model: GPT-2 L{} C{} H{} V{} ({:.2}M params)", config.num_layers, config.channels,
             config.num_heads, config.vocab_size, model.num_params()? as f64 / 1e6);

    let mut train = DataLoader::create(&format!("{}/train_*.bin", o.data), o.batch, o.seq, true, o.seed)?;
    let mut val = match DataLoader::create(&format!("{}/val_*.bin", o.data), o.batch, o.seq, false, 0) {
        Ok(v) => Some(v),
        Err(e) => {
            println!("no validation data ({}: {})", e.status, e.message);
            None
        }
    };
    let spec = match &o.tokenizer {
        Some(t) => t.clone(),
        None => {
            let next_to_data = format!("{}/tokenizer.bin", o.data);
            // the guest's own view of its preopens, the same one the host resolves against
            if Path::new(&next_to_data).is_file() { next_to_data } else { "byte".to_string() }
        }
    };
    let tokenizer = Tokenizer::load(&spec)?;

    let settings = TrainConfig::new()
        .steps(o.steps as i64)
        .lr(o.lr)
        .schedule(&o.schedule)
        .warmup(o.warmup as i64)
        .seed(o.seed)
        .threads(o.threads as i64)
        .eval_every(o.eval_every as i64)
        .eval_batches(o.eval_batches as i64)
        .save_every(o.save_every as i64)
        .out_dir(&o.out);
    {
        let job = model.train(&mut train, val.as_mut(), &settings)?;
        println!("training: {} steps, B={} T={}, lr {} ({}), out {}", o.steps, o.batch, o.seq, o.lr, o.schedule, o.out);
        let mut last_step = -1;
        let end = loop {
            // job_wait doubles as the pause between status reads
            let ended = job.wait(200)?;
            let st = job.status()?;
            if st.step != last_step && st.step > 0 {
                last_step = st.step;
                let val = st.val_loss.map_or(String::new(), |v| format!(" | val {:.4}", v));
                println!("step {}/{} | loss {:.4}{} | lr {:.2e} | norm {:.3} | {:.0} tok/s | eta {:.0}s | {:.1}s",
                         st.step, st.total_steps, st.loss.unwrap_or(f32::NAN), val, st.lr, st.grad_norm,
                         st.tokens_per_s, st.eta_s, st.elapsed_s);
            }
            if ended {
                break st;
            }
        };
        if end.state != JobState::Finished {
            eprintln!("train.wasm: the job ended {} at step {} ({}: {})", end.state.name(), end.step,
                      end.error.map_or("OK".to_string(), |s| s.to_string()), job.error_message()?);
            return Ok(1);
        }
        job.free()?; // the model and loaders are ours again
    }

    if let Some(v) = val.as_mut() {
        let loss = model.evaluate(v, o.eval_batches)?;
        println!("val loss {:.4} ({} batches)", loss, o.eval_batches);
    }
    if o.sample_tokens > 0 {
        let options = SampleOptions { max_tokens: o.sample_tokens, seed: o.seed, ..SampleOptions::default() };
        let text = model.sample(&tokenizer, &o.prompt, &options)?;
        println!("--- sample ---\n{}\n---", text);
    }
    let final_path = format!("{}/final.bin", o.out);
    model.save(&final_path)?;
    println!("saved {}", final_path);
    Ok(0)
}

fn main() {
    let o = common::parse("train.wasm");
    match run(&o) {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("train.wasm: {}", e);
            exit(1);
        }
    }
}
