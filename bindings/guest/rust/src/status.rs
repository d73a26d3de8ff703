//! Status codes, errors and job states of ABI version 1.

use core::fmt;

use crate::sys;

/// A host status code. `Ok` is 0; 1..=6 are the C core's `llmc_status`, 7 and 8 come from the
/// host's sandbox and budgets. A number the ABI does not define is kept as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    InvalidArgument,
    OutOfMemory,
    Io,
    BadFormat,
    BadState,
    Unsupported,
    PermissionDenied,
    LimitExceeded,
    Unknown(i32),
}

impl Status {
    /// Every status the ABI defines, in code order.
    pub const ALL: [Status; 9] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::OutOfMemory,
        Status::Io,
        Status::BadFormat,
        Status::BadState,
        Status::Unsupported,
        Status::PermissionDenied,
        Status::LimitExceeded,
    ];

    pub fn from_code(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::InvalidArgument,
            2 => Status::OutOfMemory,
            3 => Status::Io,
            4 => Status::BadFormat,
            5 => Status::BadState,
            6 => Status::Unsupported,
            7 => Status::PermissionDenied,
            8 => Status::LimitExceeded,
            other => Status::Unknown(other),
        }
    }

    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::InvalidArgument => 1,
            Status::OutOfMemory => 2,
            Status::Io => 3,
            Status::BadFormat => 4,
            Status::BadState => 5,
            Status::Unsupported => 6,
            Status::PermissionDenied => 7,
            Status::LimitExceeded => 8,
            Status::Unknown(c) => c,
        }
    }

    /// The ABI's name of the status: "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" otherwise.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::OutOfMemory => "OUT_OF_MEMORY",
            Status::Io => "IO",
            Status::BadFormat => "BAD_FORMAT",
            Status::BadState => "BAD_STATE",
            Status::Unsupported => "UNSUPPORTED",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::LimitExceeded => "LIMIT_EXCEEDED",
            Status::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Unknown(c) => write!(f, "UNKNOWN({})", c),
            s => f.write_str(s.name()),
        }
    }
}

/// A failed host call: which call, the status it returned and the host's one-line message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub call: &'static str,
    pub status: Status,
    pub message: String,
}

impl Error {
    /// The error of `call`, which just returned the non-zero `code`, with the host's message.
    pub fn from_last(call: &'static str, code: i32) -> Error {
        Error { call, status: Status::from_code(code), message: last_error() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}: {}", self.call, self.status, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// `Ok(())` for status 0, else the call's `Error` with the host's message.
pub(crate) fn check(call: &'static str, code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::from_last(call, code))
    }
}

/// The host's message about the last failed call (growing the buffer until it fits).
pub fn last_error() -> String {
    let mut cap = 256usize;
    for _ in 0..4 {
        let mut buf = vec![0u8; cap];
        let mut len: i32 = 0;
        let rc = unsafe { sys::last_error(buf.as_mut_ptr(), cap as i32, &mut len) };
        if rc != 0 {
            return if rc == sys::NOT_HOSTED {
                String::from("not running under a pyllmc host")
            } else {
                format!("(no message: last_error returned {})", Status::from_code(rc))
            };
        }
        let len = len.max(0) as usize;
        if len <= cap {
            buf.truncate(len);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        cap = len;
    }
    String::from("(no message: its length kept changing)")
}

/// How far a job has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Running,
    Finished,
    Stopped,
    Failed,
    Unknown(i32),
}

impl JobState {
    pub fn from_code(code: i32) -> JobState {
        match code {
            0 => JobState::Running,
            1 => JobState::Finished,
            2 => JobState::Stopped,
            3 => JobState::Failed,
            other => JobState::Unknown(other),
        }
    }

    pub fn code(self) -> i32 {
        match self {
            JobState::Running => 0,
            JobState::Finished => 1,
            JobState::Stopped => 2,
            JobState::Failed => 3,
            JobState::Unknown(c) => c,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Stopped => "stopped",
            JobState::Failed => "failed",
            JobState::Unknown(_) => "unknown",
        }
    }

    pub fn is_running(self) -> bool {
        self == JobState::Running
    }
}

/// A job's status as `job_status` reports it; NaN losses (none yet) are `None`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobStatus {
    pub state: JobState,
    pub step: i32,
    pub total_steps: i32,
    /// The status that ended a failed job.
    pub error: Option<Status>,
    pub loss: Option<f32>,
    pub val_loss: Option<f32>,
    pub lr: f32,
    pub grad_norm: f32,
    pub tokens_per_s: f32,
    pub eta_s: f32,
    pub elapsed_s: f64,
}

impl From<sys::RawStatus> for JobStatus {
    fn from(r: sys::RawStatus) -> JobStatus {
        let opt = |x: f32| if x.is_nan() { None } else { Some(x) };
        JobStatus {
            state: JobState::from_code(r.state),
            step: r.step,
            total_steps: r.total_steps,
            error: if r.error == 0 { None } else { Some(Status::from_code(r.error)) },
            loss: opt(r.loss),
            val_loss: opt(r.val_loss),
            lr: r.lr,
            grad_norm: r.grad_norm,
            tokens_per_s: r.tokens_per_s,
            eta_s: r.eta_s,
            elapsed_s: r.elapsed_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.code(), i as i32);
            assert_eq!(Status::from_code(i as i32), *s);
        }
        assert_eq!(Status::from_code(9), Status::Unknown(9));
        assert_eq!(Status::from_code(-1).to_string(), "UNKNOWN(-1)");
        assert_eq!(Status::PermissionDenied.to_string(), "PERMISSION_DENIED");
        for c in 0..4 {
            assert_eq!(JobState::from_code(c).code(), c);
        }
    }

    #[test]
    fn status_struct_layout() {
        let r = sys::RawStatus::default();
        let base = &r as *const _ as usize;
        let at = |p: *const u8| p as usize - base;
        assert_eq!(at(&r.state as *const _ as *const u8), 0);
        assert_eq!(at(&r.step as *const _ as *const u8), 4);
        assert_eq!(at(&r.total_steps as *const _ as *const u8), 8);
        assert_eq!(at(&r.error as *const _ as *const u8), 12);
        assert_eq!(at(&r.loss as *const _ as *const u8), 16);
        assert_eq!(at(&r.val_loss as *const _ as *const u8), 20);
        assert_eq!(at(&r.lr as *const _ as *const u8), 24);
        assert_eq!(at(&r.grad_norm as *const _ as *const u8), 28);
        assert_eq!(at(&r.tokens_per_s as *const _ as *const u8), 32);
        assert_eq!(at(&r.eta_s as *const _ as *const u8), 36);
        assert_eq!(at(&r.elapsed_s as *const _ as *const u8), 40);
    }

    #[test]
    fn job_status_maps_nan_to_none() {
        let raw = sys::RawStatus { state: 3, error: 5, loss: f32::NAN, val_loss: 2.5, ..Default::default() };
        let s = JobStatus::from(raw);
        assert_eq!(s.state, JobState::Failed);
        assert_eq!(s.error, Some(Status::BadState));
        assert_eq!(s.loss, None);
        assert_eq!(s.val_loss, Some(2.5));
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn off_host_calls_say_so() {
        let e = Error::from_last("model_free", sys::NOT_HOSTED);
        assert_eq!(e.status, Status::Unsupported);
        assert_eq!(e.to_string(), "model_free failed: UNSUPPORTED: not running under a pyllmc host");
    }
}
