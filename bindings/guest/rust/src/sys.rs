//! The raw imports of ABI version 1, one `extern "C"` function per host function of module
//! `"pyllmc"`, exactly as the host declares them (pointers are wasm32 `i32` offsets).
//!
//! Everything here is `unsafe`: the host checks every pointer against the guest's memory,
//! so a wrong pointer is an `INVALID_ARGUMENT`, not a crash, but writing through a pointer
//! into memory that Rust considers owned by something else is still undefined behaviour on
//! the guest side. Use the safe types of the crate root instead.
//!
//! On targets other than wasm32 (e.g. `cargo test` on the build machine) there is no host to
//! import from; every function then returns [`NOT_HOSTED`] (`UNSUPPORTED`) without touching
//! its arguments, so the pure parts of the crate can be tested natively.

/// The status every function returns off wasm32: `UNSUPPORTED`.
pub const NOT_HOSTED: i32 = 6;

/// `pyllmc_status` as `job_status` writes it: 48 bytes, little-endian, naturally aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RawStatus {
    pub state: i32,
    pub step: i32,
    pub total_steps: i32,
    pub error: i32,
    pub loss: f32,
    pub val_loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
    pub tokens_per_s: f32,
    pub eta_s: f32,
    pub elapsed_s: f64,
}

/// The model shape `model_create` reads: 6 x i32 in the order of llm.c's checkpoint header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawModelConfig {
    pub max_seq_len: i32,
    pub vocab_size: i32,
    pub padded_vocab_size: i32,
    pub num_layers: i32,
    pub num_heads: i32,
    pub channels: i32,
}

// The layouts are part of the ABI.
const _: () = assert!(core::mem::size_of::<RawStatus>() == 48);
const _: () = assert!(core::mem::align_of::<RawStatus>() == 8);
const _: () = assert!(core::mem::size_of::<RawModelConfig>() == 24);

macro_rules! imports {
    ($( $(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> i32; )*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "pyllmc")]
        extern "C" {
            $( $(#[$doc])* pub fn $name($($arg: $ty),*) -> i32; )*
        }

        #[cfg(not(target_arch = "wasm32"))]
        mod not_hosted {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[allow(unused_variables, clippy::missing_safety_doc)]
                pub unsafe fn $name($($arg: $ty),*) -> i32 { super::not_hosted_result(stringify!($name)) }
            )*
        }
        #[cfg(not(target_arch = "wasm32"))]
        pub use not_hosted::*;
    };
}

#[cfg(not(target_arch = "wasm32"))]
fn not_hosted_result(name: &str) -> i32 {
    // abi_version answers a version, not a status: 0 = no host
    if name == "abi_version" {
        0
    } else {
        NOT_HOSTED
    }
}

imports! {
    /// The ABI version the host implements (1); a version, not a status.
    pub fn abi_version() -> i32;
    /// The last failed call's message: at most `cap` bytes into `buf`, full length in `*out_len`.
    pub fn last_error(buf: *mut u8, cap: i32, out_len: *mut i32) -> i32;

    pub fn model_create(config: *const RawModelConfig, seed: i64, out_model: *mut i32) -> i32;
    pub fn model_load(path: *const u8, path_len: i32, out_model: *mut i32) -> i32;
    pub fn model_save(model: i32, path: *const u8, path_len: i32) -> i32;
    pub fn model_num_params(model: i32, out: *mut i64) -> i32;
    pub fn model_free(model: i32) -> i32;

    pub fn dataloader_create(pattern: *const u8, pattern_len: i32, batch: i32, seq: i32, shuffle: i32,
                             seed: i64, out_loader: *mut i32) -> i32;
    pub fn dataloader_free(loader: i32) -> i32;

    pub fn tokenizer_load(spec: *const u8, spec_len: i32, out_tok: *mut i32) -> i32;
    pub fn tokenizer_encode(tok: i32, text: *const u8, text_len: i32, out_ids: *mut i32, cap: i32,
                            out_n: *mut i32) -> i32;
    pub fn tokenizer_decode(tok: i32, ids: *const i32, n: i32, out: *mut u8, cap: i32, out_len: *mut i32) -> i32;
    pub fn tokenizer_free(tok: i32) -> i32;

    pub fn train_step(model: i32, loader: i32, lr: f32, out_loss: *mut f32) -> i32;
    pub fn evaluate(model: i32, loader: i32, batches: i32, out_loss: *mut f32) -> i32;
    pub fn sample(model: i32, tok: i32, prompt: *const u8, prompt_len: i32, max_tokens: i32, temperature: f32,
                  top_k: i32, seed: i64, out: *mut u8, cap: i32, out_len: *mut i32) -> i32;

    pub fn train_start(model: i32, train_loader: i32, val_loader: i32, config_json: *const u8, config_len: i32,
                       out_job: *mut i32) -> i32;
    pub fn job_status(job: i32, out_status: *mut RawStatus) -> i32;
    pub fn job_wait(job: i32, timeout_ms: i32) -> i32;
    pub fn job_stop(job: i32) -> i32;
    pub fn job_free(job: i32) -> i32;

    // --- additions to version 1: pyllmc's host provides them; a guest imports one only if it
    // --- calls it (the linker drops unused imports), and an older host refuses such a guest
    /// The one-line message of a failed job, written like `last_error` (empty while it runs
    /// and when it did not fail).
    pub fn job_error(job: i32, buf: *mut u8, cap: i32, out_len: *mut i32) -> i32;
}
