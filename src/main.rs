fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`pipeline status x.yaml | head`) like other Unix tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    pipeline::cli::main()
}
