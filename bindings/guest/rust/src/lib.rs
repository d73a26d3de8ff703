//! `pyllmc-guest`: safe Rust bindings for WebAssembly guests of the pyllmc host, ABI version 1.
//!
//! A guest is a `wasm32-wasi` program run by `pyllmc wasm run guest.wasm --dir data::/data`.
//! It creates models, data loaders and tokenizers on the host, which trains them with its
//! native C core; the guest holds only handles. Each handle type here frees its host object
//! when dropped, every call returns [`Result`] with the status and the host's message, and a
//! training [`Job`] borrows its model and loaders, so the compiler rules out using them while
//! the host trains them (the host would answer `BAD_STATE`).
//!
//! ```no_run
//! use pyllmc_guest::{DataLoader, Model, ModelConfig, TrainConfig};
//! # fn main() -> pyllmc_guest::Result<()> {
//! let mut model = Model::create(&ModelConfig::from_size(2, 257, 64), 0)?;
//! let mut train = DataLoader::create("/data/train_*.bin", 4, 64, true, 0)?;
//! let config = TrainConfig::new().steps(20).lr(1e-3).out_dir("/runs/guest");
//! let job = model.train(&mut train, None, &config)?;
//! let end = job.wait_done()?;
//! println!("{} at step {}", end.state.name(), end.step);
//! # Ok(()) }
//! ```
//!
//! Build: `RUSTC=/usr/bin/rustc cargo build --offline --target wasm32-wasi --release`.

use core::marker::PhantomData;

pub mod json;
mod status;
pub mod sys;

pub use status::{last_error, Error, JobState, JobStatus, Result, Status};
use status::check;

/// The ABI version this crate speaks.
pub const ABI_VERSION: i32 = 1;

/// The ABI version of the host (0 when not running under one).
pub fn abi_version() -> i32 {
    unsafe { sys::abi_version() }
}

/// `Ok(())` when the host speaks this crate's ABI version, else an `UNSUPPORTED` error.
pub fn check_abi() -> Result<()> {
    let v = abi_version();
    if v == ABI_VERSION {
        Ok(())
    } else {
        Err(Error {
            call: "abi_version",
            status: Status::Unsupported,
            message: format!("the host speaks ABI version {}, this guest was built for {}", v, ABI_VERSION),
        })
    }
}

/// A length as the `i32` the ABI takes, or an `INVALID_ARGUMENT` error naming the call.
fn len_i32(call: &'static str, what: &str, n: usize) -> Result<i32> {
    if n > i32::MAX as usize {
        return Err(Error {
            call,
            status: Status::InvalidArgument,
            message: format!("{} is {} long, more than the ABI's 2^31 - 1", what, n),
        });
    }
    Ok(n as i32)
}

/// Calls `f(out, cap, out_len)` with a buffer of `cap` elements, and again with a buffer of
/// the full length when the host reports more than fit; returns exactly the host's elements.
/// The result is deterministic (a sample is drawn from its seed), so one retry suffices; a
/// host whose answer keeps growing is reported as `BAD_STATE` after a few tries, not looped on.
fn read_into<T: Copy + Default>(
    call: &'static str,
    cap: usize,
    mut f: impl FnMut(*mut T, i32, *mut i32) -> i32,
) -> Result<Vec<T>> {
    let mut cap = cap.clamp(1, i32::MAX as usize);
    for _ in 0..4 {
        let mut buf = vec![T::default(); cap];
        let mut n: i32 = 0;
        check(call, f(buf.as_mut_ptr(), cap as i32, &mut n))?;
        let n = n.max(0) as usize;
        if n <= cap {
            buf.truncate(n);
            return Ok(buf);
        }
        cap = n;
    }
    Err(Error {
        call,
        status: Status::BadState,
        message: format!("the result kept growing between calls (last reported length {})", cap),
    })
}

/// A model shape: the six integers of llm.c's checkpoint header.
pub type ModelConfig = sys::RawModelConfig;

impl ModelConfig {
    /// The shape `pyllmc train --model dN` builds: the GPT-2 sizes for d12 (124M), d24, d36,
    /// d48; any other dN has N layers, 64*N channels and N heads. The vocabulary is padded to
    /// a multiple of 128.
    pub fn from_size(depth: i32, vocab_size: i32, max_seq_len: i32) -> ModelConfig {
        let (channels, heads) = match depth {
            12 => (768, 12),
            24 => (1024, 16),
            36 => (1280, 20),
            48 => (1600, 25),
            n => (64 * n, n),
        };
        ModelConfig {
            max_seq_len,
            vocab_size,
            padded_vocab_size: pad_vocab(vocab_size),
            num_layers: depth,
            num_heads: heads,
            channels,
        }
    }
}

/// `vocab_size` rounded up to a multiple of 128 (50257 -> 50304).
pub fn pad_vocab(vocab_size: i32) -> i32 {
    (vocab_size + 127) / 128 * 128
}

// ---------------------------------------------------------------------------- Model

/// A GPT-2 on the host. Freed when dropped.
#[derive(Debug)]
pub struct Model {
    handle: i32,
}

impl Model {
    /// A fresh model of the given shape, initialised from `seed` as `pyllmc train` does.
    pub fn create(config: &ModelConfig, seed: i64) -> Result<Model> {
        let mut h = 0;
        check("model_create", unsafe { sys::model_create(config, seed, &mut h) })?;
        Ok(Model { handle: h })
    }

    /// An llm.c checkpoint (version 3 or 5) at a guest path.
    pub fn load(path: &str) -> Result<Model> {
        let n = len_i32("model_load", "the path", path.len())?;
        let mut h = 0;
        check("model_load", unsafe { sys::model_load(path.as_ptr(), n, &mut h) })?;
        Ok(Model { handle: h })
    }

    /// Writes the parameters as an llm.c version-3 checkpoint at a guest path (atomically).
    pub fn save(&self, path: &str) -> Result<()> {
        let n = len_i32("model_save", "the path", path.len())?;
        check("model_save", unsafe { sys::model_save(self.handle, path.as_ptr(), n) })
    }

    pub fn num_params(&self) -> Result<i64> {
        let mut n = 0i64;
        check("model_num_params", unsafe { sys::model_num_params(self.handle, &mut n) })?;
        Ok(n)
    }

    /// One optimizer step on the loader's next batch with the Trainer's AdamW settings and
    /// this learning rate; returns the batch's mean loss before the update.
    pub fn train_step(&mut self, loader: &mut DataLoader, lr: f32) -> Result<f32> {
        let mut loss = 0f32;
        check("train_step", unsafe { sys::train_step(self.handle, loader.handle, lr, &mut loss) })?;
        Ok(loss)
    }

    /// Mean loss over the first `batches` batches of `loader` (from its start).
    pub fn evaluate(&mut self, loader: &mut DataLoader, batches: i32) -> Result<f32> {
        let mut loss = 0f32;
        check("evaluate", unsafe { sys::evaluate(self.handle, loader.handle, batches, &mut loss) })?;
        Ok(loss)
    }

    /// Generated text: the prompt followed by `options.max_tokens` sampled tokens, decoded.
    pub fn sample(&mut self, tokenizer: &Tokenizer, prompt: &str, options: &SampleOptions) -> Result<String> {
        let plen = len_i32("sample", "the prompt", prompt.len())?;
        let guess = prompt.len() + 16 * options.max_tokens.max(0) as usize + 64;
        let h = self.handle;
        let bytes = read_into("sample", guess, |out, cap, out_len| unsafe {
            sys::sample(h, tokenizer.handle, prompt.as_ptr(), plen, options.max_tokens, options.temperature,
                        options.top_k, options.seed, out, cap, out_len)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Starts a whole training run on the host, in the background. The job borrows the
    /// model and the loaders until it is dropped (or [`Job::free`]d): the host trains them,
    /// so nothing else may use them meanwhile.
    pub fn train<'a>(
        &'a mut self,
        train: &'a mut DataLoader,
        val: Option<&'a mut DataLoader>,
        config: &TrainConfig,
    ) -> Result<Job<'a>> {
        let text = config.to_json();
        let n = len_i32("train_start", "the configuration", text.len())?;
        let val_handle = val.map_or(0, |v| v.handle);
        let mut h = 0;
        check("train_start", unsafe {
            sys::train_start(self.handle, train.handle, val_handle, text.as_ptr(), n, &mut h)
        })?;
        Ok(Job { handle: h, _busy: PhantomData })
    }

    /// The raw handle (for calling [`sys`] directly).
    pub fn handle(&self) -> i32 {
        self.handle
    }

    /// Frees the model now, reporting a failure (dropping it frees it silently).
    pub fn free(self) -> Result<()> {
        let h = self.handle;
        core::mem::forget(self);
        check("model_free", unsafe { sys::model_free(h) })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::model_free(self.handle) };
    }
}

/// Settings of [`Model::sample`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    pub max_tokens: i32,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = the whole vocabulary.
    pub top_k: i32,
    pub seed: i64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions { max_tokens: 64, temperature: 1.0, top_k: 0, seed: 0 }
    }
}

// ---------------------------------------------------------------------------- DataLoader

/// Batches of llm.c token shards on the host. Freed when dropped.
#[derive(Debug)]
pub struct DataLoader {
    handle: i32,
}

impl DataLoader {
    /// Shards at a guest path or glob (`/data/train_*.bin`), in batches of `batch` x `seq`;
    /// `shuffle` draws the order from `seed` as the Trainer's loader does.
    pub fn create(pattern: &str, batch: i32, seq: i32, shuffle: bool, seed: i64) -> Result<DataLoader> {
        let n = len_i32("dataloader_create", "the pattern", pattern.len())?;
        let mut h = 0;
        check("dataloader_create", unsafe {
            sys::dataloader_create(pattern.as_ptr(), n, batch, seq, shuffle as i32, seed, &mut h)
        })?;
        Ok(DataLoader { handle: h })
    }

    pub fn handle(&self) -> i32 {
        self.handle
    }

    pub fn free(self) -> Result<()> {
        let h = self.handle;
        core::mem::forget(self);
        check("dataloader_free", unsafe { sys::dataloader_free(h) })
    }
}

impl Drop for DataLoader {
    fn drop(&mut self) {
        unsafe { sys::dataloader_free(self.handle) };
    }
}

// ---------------------------------------------------------------------------- Tokenizer

/// A tokenizer on the host. Freed when dropped.
#[derive(Debug)]
pub struct Tokenizer {
    handle: i32,
}

impl Tokenizer {
    /// `"byte"`, `"gpt2"` (where the host has the GPT-2 BPE), or a guest path to an llm.c
    /// `tokenizer.bin`.
    pub fn load(spec: &str) -> Result<Tokenizer> {
        let n = len_i32("tokenizer_load", "the spec", spec.len())?;
        let mut h = 0;
        check("tokenizer_load", unsafe { sys::tokenizer_load(spec.as_ptr(), n, &mut h) })?;
        Ok(Tokenizer { handle: h })
    }

    /// The byte-level tokenizer (256 bytes + end-of-text).
    pub fn byte() -> Result<Tokenizer> {
        Tokenizer::load("byte")
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i32>> {
        let n = len_i32("tokenizer_encode", "the text", text.len())?;
        let h = self.handle;
        read_into("tokenizer_encode", text.len() + 1, |out, cap, out_n| unsafe {
            sys::tokenizer_encode(h, text.as_ptr(), n, out, cap, out_n)
        })
    }

    /// The text of `ids` (invalid UTF-8, e.g. half a character, replaced by U+FFFD).
    pub fn decode(&self, ids: &[i32]) -> Result<String> {
        let n = len_i32("tokenizer_decode", "the id list", ids.len())?;
        let h = self.handle;
        let bytes = read_into("tokenizer_decode", 8 * ids.len() + 16, |out, cap, out_len| unsafe {
            sys::tokenizer_decode(h, ids.as_ptr(), n, out, cap, out_len)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn handle(&self) -> i32 {
        self.handle
    }

    pub fn free(self) -> Result<()> {
        let h = self.handle;
        core::mem::forget(self);
        check("tokenizer_free", unsafe { sys::tokenizer_free(h) })
    }
}

impl Drop for Tokenizer {
    fn drop(&mut self) {
        unsafe { sys::tokenizer_free(self.handle) };
    }
}

// ---------------------------------------------------------------------------- Job

/// A training run on the host, started by [`Model::train`]. Dropping it frees it (a running
/// job is stopped first) and gives the model and loaders back.
///
/// While the job lives, the model and loaders are borrowed by it, so using them does not
/// compile (the host would answer `BAD_STATE`):
///
/// ```compile_fail
/// # use pyllmc_guest::*;
/// # fn f(model: &mut Model, train: &mut DataLoader) -> Result<()> {
/// let job = model.train(train, None, &TrainConfig::new().steps(100))?;
/// model.save("/runs/early.bin")?; // error[E0502]: `*model` is already borrowed mutably by `job`
/// job.wait_done()?;
/// # Ok(()) }
/// ```
///
/// Once it is gone, they are free again:
///
/// ```no_run
/// # use pyllmc_guest::*;
/// # fn f(model: &mut Model, train: &mut DataLoader) -> Result<()> {
/// let job = model.train(train, None, &TrainConfig::new().steps(100))?;
/// job.wait_done()?;
/// job.free()?;
/// model.save("/runs/done.bin")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Job<'a> {
    handle: i32,
    _busy: PhantomData<&'a mut Model>,
}

impl<'a> Job<'a> {
    pub fn status(&self) -> Result<JobStatus> {
        let mut raw = sys::RawStatus::default();
        check("job_status", unsafe { sys::job_status(self.handle, &mut raw) })?;
        Ok(JobStatus::from(raw))
    }

    /// Waits up to `timeout_ms` (-1: no limit): `true` once the job has ended, `false` if it
    /// is still running.
    pub fn wait(&self, timeout_ms: i32) -> Result<bool> {
        match unsafe { sys::job_wait(self.handle, timeout_ms) } {
            0 => Ok(true),
            5 => Ok(false), // BAD_STATE: still running after the timeout
            rc => Err(Error::from_last("job_wait", rc)),
        }
    }

    /// Waits for the end and returns the final status.
    pub fn wait_done(&self) -> Result<JobStatus> {
        while !self.wait(-1)? {}
        self.status()
    }

    /// Why a failed job failed: the host's one-line message (empty while the job runs and
    /// when it did not fail). An addition to ABI version 1 (`job_error`).
    pub fn error_message(&self) -> Result<String> {
        let h = self.handle;
        let bytes = read_into("job_error", 256, |out, cap, out_len| unsafe { sys::job_error(h, out, cap, out_len) })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Asks the job to stop after the current step (with a checkpoint when out_dir is set).
    pub fn stop(&self) -> Result<()> {
        check("job_stop", unsafe { sys::job_stop(self.handle) })
    }

    pub fn handle(&self) -> i32 {
        self.handle
    }

    pub fn free(self) -> Result<()> {
        let h = self.handle;
        core::mem::forget(self);
        check("job_free", unsafe { sys::job_free(h) })
    }
}

impl<'a> Drop for Job<'a> {
    fn drop(&mut self) {
        unsafe { sys::job_free(self.handle) };
    }
}

// ---------------------------------------------------------------------------- TrainConfig

/// The configuration of [`Model::train`]: keys are the host's TrainerConfig field names;
/// what is not set takes the Trainer's default. Batch and sequence length come from the
/// loader. [`TrainConfig::set`] reaches any other field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainConfig {
    object: json::Object,
}

macro_rules! setters {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty ),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.object.set(stringify!($name), json::Value::from(value));
                self
            }
        )*
    };
}

impl TrainConfig {
    pub fn new() -> Self {
        TrainConfig { object: json::Object::new() }
    }

    setters! {
        /// Length of the whole run in optimizer steps (the LR schedule follows it).
        steps: i64,
        /// Peak learning rate.
        lr: f64,
        /// cosine | linear | constant | wsd
        schedule: &str,
        warmup: i64,
        final_frac: f64,
        weight_decay: f64,
        grad_clip: f64,
        grad_accum: i64,
        /// Validation loss every N steps (and at the last); needs a validation loader.
        eval_every: i64,
        eval_batches: i64,
        /// Checkpoint every N steps (and at the end); needs out_dir.
        save_every: i64,
        keep_last: i64,
        /// A guest path: metrics.jsonl and checkpoints go there.
        out_dir: &str,
        /// Data shuffling and sampling inside the run.
        seed: i64,
        /// Host threads for this run (0 = the host's default).
        threads: i64,
    }

    /// Any TrainerConfig field by name; the host rejects an unknown key or a wrong type
    /// with INVALID_ARGUMENT naming it.
    pub fn set(mut self, key: &str, value: impl Into<json::Value>) -> Self {
        self.object.set(key, value.into());
        self
    }

    /// The JSON object `train_start` receives.
    pub fn to_json(&self) -> String {
        self.object.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_config_json() {
        let c = TrainConfig::new().steps(20).lr(1e-3).schedule("constant").out_dir("/runs/a \"b\"").steps(30)
            .set("decay_matrices_only", false);
        assert_eq!(c.to_json(),
                   "{\"steps\":30,\"lr\":0.001,\"schedule\":\"constant\",\"out_dir\":\"/runs/a \\\"b\\\"\",\
                    \"decay_matrices_only\":false}");
    }

    #[test]
    fn size_configs_match_pyllmc() {
        let d2 = ModelConfig::from_size(2, 257, 64);
        assert_eq!((d2.num_layers, d2.channels, d2.num_heads, d2.padded_vocab_size), (2, 128, 2, 384));
        let d12 = ModelConfig::from_size(12, 50257, 1024);
        assert_eq!((d12.num_layers, d12.channels, d12.num_heads, d12.padded_vocab_size), (12, 768, 12, 50304));
    }

    #[test]
    fn read_into_retries_once_with_the_full_length() {
        let data: Vec<u8> = (0..100).collect();
        let mut calls = Vec::new();
        let got = read_into("sample", 10, |out, cap, out_len| {
            calls.push(cap);
            let k = (cap as usize).min(data.len());
            unsafe {
                core::ptr::copy_nonoverlapping(data.as_ptr(), out, k);
                *out_len = data.len() as i32;
            }
            0
        })
        .unwrap();
        assert_eq!(got, data);
        assert_eq!(calls, vec![10, 100]);
    }

    #[test]
    fn read_into_gives_up_on_a_growing_answer() {
        let mut n = 10;
        let e = read_into::<u8>("sample", 1, |_, _, out_len| {
            n *= 2;
            unsafe { *out_len = n };
            0
        })
        .unwrap_err();
        assert_eq!((e.call, e.status), ("sample", Status::BadState));
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn off_host_everything_is_unsupported() {
        assert_eq!(abi_version(), 0);
        assert!(check_abi().is_err());
        let e = Model::create(&ModelConfig::from_size(2, 257, 64), 0).unwrap_err();
        assert_eq!((e.call, e.status), ("model_create", Status::Unsupported));
    }
}
