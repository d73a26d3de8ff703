//! A guest that drives training itself, one `train_step` call per optimizer step (constant
//! learning rate), then uses the rest of the ABI: a tokenizer round trip, save and reload
//! (the reloaded model must evaluate to the same loss), and a long background job that it
//! stops at once.
//!
//!     pyllmc wasm run steps.wasm --dir data::/data --dir runs::/runs -- --steps 10 --out /runs/steps
//!
//! Flags as in the `train` example (`--help`); the default --out here is /runs/steps.

mod common;

use std::path::Path;
use std::process::exit;

use pyllmc_guest::{check_abi, DataLoader, Model, ModelConfig, Result, Tokenizer, TrainConfig};

fn run(o: &common::Options) -> Result<i32> {
    check_abi()?;
    let mut model = Model::create(&ModelConfig::from_size(o.depth, o.vocab_size, o.max_seq_len), o.seed)?;
    let mut train = DataLoader::create(&format!("{}/train_*.bin", o.data), o.batch, o.seq, true, o.seed)?;
    let mut val = DataLoader::create(&format!("{}/val_*.bin", o.data), o.batch, o.seq, false, 0).ok();
    let next_to_data = format!("{}/tokenizer.bin", o.data);
    let tokenizer = match &o.tokenizer {
        Some(spec) => Tokenizer::load(spec)?,
        None if Path::new(&next_to_data).is_file() => Tokenizer::load(&next_to_data)?,
        None => Tokenizer::byte()?,
    };

    // the output directory, made through the guest's own WASI calls (inside its preopens)
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("steps.wasm: cannot create {}: {}", o.out, e);
        return Ok(1);
    }
    for s in 1..=o.steps {
        let loss = model.train_step(&mut train, o.lr as f32)?;
        println!("step {}/{} | loss {}", s, o.steps, loss); // Display: the exact f32
    }

    let prompt = if o.prompt.is_empty() { "To be" } else { o.prompt.as_str() };
    let ids = tokenizer.encode(prompt)?;
    let back = tokenizer.decode(&ids)?;
    println!("prompt: {} tokens, decoded back: '{}'{}", ids.len(), back, if back == prompt { "" } else { " (differs)" });

    let path = format!("{}/steps.bin", o.out);
    model.save(&path)?;
    let mut again = Model::load(&path)?;
    if let Some(v) = val.as_mut() {
        let a = model.evaluate(v, 2)?;
        let b = again.evaluate(v, 2)?;
        println!("val loss {}, reloaded {}", a, b);
        if a != b {
            eprintln!("steps.wasm: the reloaded model evaluates differently");
            return Ok(1);
        }
    }

    let long_run = TrainConfig::new().steps(1_000_000).lr(1e-4).schedule("constant");
    let job = again.train(&mut train, None, &long_run)?;
    job.stop()?;
    let end = job.wait_done()?;
    println!("background job: {} after {} of {} steps", end.state.name(), end.step, end.total_steps);
    job.free()?;
    Ok(0)
}

fn main() {
    let mut o = common::parse("steps.wasm");
    if o.out == "/runs/guest" {
        o.out = "/runs/steps".into();
    }
    match run(&o) {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("steps.wasm: {}", e);
            exit(1);
        }
    }
}
