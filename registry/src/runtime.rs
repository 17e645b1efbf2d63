//! The async runtime of one push or pull: a current-thread tokio runtime, started per call
//! (kiln's other commands are synchronous).

use std::future::Future;

use crate::error::{Error, Result};

/// Runs `fut` to completion on a fresh current-thread runtime.
pub(crate) fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?
        .block_on(fut)
}
