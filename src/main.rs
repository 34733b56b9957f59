fn main() -> std::process::ExitCode {
    certkeeper::cli::main()
}
