use clap::Parser;

fn main() {
    let cli = fer_lab::cli::Cli::parse();
    if let Err(err) = fer_lab::cli::run(cli) {
        eprintln!("fer-lab: {err:#}");
        std::process::exit(fer_lab::cli::exit_code(&err));
    }
}
