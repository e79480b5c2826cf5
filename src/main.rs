use clap::Parser;

/// mimalloc instead of the system allocator. With glibc, the rayon workers'
/// own arenas handed large freed blocks back to the kernel despite a
/// maximal `M_TRIM_THRESHOLD`, so every training step page-faulted its big
/// activation and gradient buffers in again, two threads at a time.
/// ResNet-18 at 112x112, batch 8, 2 threads (`/usr/bin/time fer-lab bench
/// --backbone resnet18 --size 112 --profile`, runs one after the other):
/// glibc 745k page faults and 191 ms a step (its stem's max-pool backward
/// alone 15 ms: 6.4 MB of fresh pages), glibc with one arena
/// (`M_ARENA_MAX=1`) 186k and 164 ms (max-pool backward 1 ms) but 4-6%
/// slower steps at 48x48, mimalloc 31k and 165 ms with 48x48 steps as fast
/// as glibc's or slightly faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = fer_lab::cli::Cli::parse();
    if let Err(err) = fer_lab::cli::run(cli) {
        eprintln!("fer-lab: {err:#}");
        std::process::exit(fer_lab::cli::exit_code(&err));
    }
}
