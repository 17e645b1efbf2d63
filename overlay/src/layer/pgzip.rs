//! Parallel gzip, as pigz does it: the stream is cut into fixed-size blocks, each compressed on
//! its own thread as raw deflate primed with the previous block's last 32 KiB and ended with a
//! sync flush (the last one with a final block), then concatenated behind one gzip header and
//! trailer. One ordinary gzip member comes out, the same bytes whatever the thread count.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Crc, FlushCompress, Status};

/// Deflate's window: how much of the previous block primes the next one.
const WINDOW: usize = 32 << 10;

/// gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown (reproducible).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A block to compress: its index, the data, the dictionary, and whether it ends the stream.
struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Option<Vec<u8>>,
    last: bool,
}

/// Compresses every block received on `rx` with `threads` workers into `out` as one gzip member.
pub(crate) fn compress(
    rx: Receiver<Vec<u8>>,
    out: &mut dyn Write,
    level: u32,
    threads: usize,
) -> io::Result<()> {
    out.write_all(&HEADER)?;
    let mut crc = Crc::new();
    let threads = threads.max(1);
    let (job_tx, job_rx) = channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = channel::<(u64, io::Result<Vec<u8>>)>();
    std::thread::scope(|scope| -> io::Result<()> {
        for _ in 0..threads {
            let (job_rx, done_tx) = (Arc::clone(&job_rx), done_tx.clone());
            scope.spawn(move || worker(&job_rx, &done_tx, level));
        }
        drop(done_tx);
        let mut w = Writer {
            out: &mut *out,
            next: 0,
            pending: BTreeMap::new(),
            done_rx,
        };
        let mut sent = 0u64;
        let mut held: Option<Vec<u8>> = None;
        let mut dict: Option<Vec<u8>> = None;
        let mut dispatch =
            |data: Vec<u8>, last: bool, w: &mut Writer<'_>, dict: &mut Option<Vec<u8>>| {
                let next_dict = data[data.len().saturating_sub(WINDOW)..].to_vec();
                let job = Job {
                    seq: sent,
                    data,
                    dict: dict.replace(next_dict),
                    last,
                };
                sent += 1;
                job_tx
                    .send(job)
                    .map_err(|_| io::Error::other("gzip workers stopped"))?;
                // Bound memory: at most two blocks a worker in flight.
                while sent - w.next > 2 * threads as u64 {
                    w.write_one()?;
                }
                Ok::<(), io::Error>(())
            };
        for block in rx.iter() {
            if block.is_empty() {
                continue;
            }
            crc.update(&block);
            if let Some(prev) = held.replace(block) {
                dispatch(prev, false, &mut w, &mut dict)?;
            }
        }
        dispatch(held.take().unwrap_or_default(), true, &mut w, &mut dict)?;
        drop(job_tx);
        while w.next < sent {
            w.write_one()?;
        }
        Ok(())
    })?;
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(())
}

/// Writes finished blocks in order.
struct Writer<'o> {
    out: &'o mut dyn Write,
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    done_rx: Receiver<(u64, io::Result<Vec<u8>>)>,
}

impl Writer<'_> {
    /// Waits for the next block in order and writes it.
    fn write_one(&mut self) -> io::Result<()> {
        while !self.pending.contains_key(&self.next) {
            let (seq, block) = self
                .done_rx
                .recv()
                .map_err(|_| io::Error::other("gzip workers stopped"))?;
            self.pending.insert(seq, block?);
        }
        if let Some(block) = self.pending.remove(&self.next) {
            self.out.write_all(&block)?;
        }
        self.next += 1;
        Ok(())
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, done: &Sender<(u64, io::Result<Vec<u8>>)>, level: u32) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = deflate_block(&job, level);
        if done.send((job.seq, result)).is_err() {
            return;
        }
    }
}

/// Raw deflate of one block, primed with `dict`, ended by a sync flush (or the final block).
fn deflate_block(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = &job.dict {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == job.data.len();
        let finished = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            // A sync flush is complete once it returns with output space to spare.
            _ => all_in && out.len() < out.capacity(),
        };
        if finished {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(data: &[u8], block: usize, threads: usize) -> Vec<u8> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let chunks: Vec<Vec<u8>> = data.chunks(block).map(<[u8]>::to_vec).collect();
        let feeder = std::thread::spawn(move || {
            for c in chunks {
                tx.send(c).unwrap();
            }
        });
        let mut out = Vec::new();
        compress(rx, &mut out, 1, threads).unwrap();
        feeder.join().unwrap();
        out
    }

    #[test]
    fn one_gzip_member_that_decodes_and_is_independent_of_threads() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7000) as u8)
            .collect();
        let one = run(&data, 100_000, 1);
        let four = run(&data, 100_000, 4);
        assert_eq!(one, four);
        let mut back = Vec::new();
        // A single-member decoder must read it all: it is one gzip stream, not several.
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(
            one.len() < data.len() / 4,
            "dictionary priming lost: {} bytes",
            one.len()
        );
    }

    #[test]
    fn empty_input_is_a_valid_empty_gzip() {
        let out = run(&[], 10, 2);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
