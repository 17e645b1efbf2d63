//! kiln-bench: runs one benchmark scenario, measuring kiln next to its peers in the same run.

fn main() {
    eprintln!("kiln-bench: no scenarios yet");
    std::process::exit(2);
}
