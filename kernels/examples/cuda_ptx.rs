//! Writes the PTX of every CUDA kernel source, for every target arch, to a folder:
//! `<dir>/<name>.<arch>.ptx`, and checks that NVRTC also gives a CUBIN for each (what
//! `Gpu::new` loads). Used by `scripts/cuda-check-no-gpu.sh`, which then assembles each
//! file with `ptxas`. Needs NVRTC on `LD_LIBRARY_PATH`, no GPU.
//!
//! `cargo run -p kernels --features cuda --example cuda_ptx -- <dir>`

use kernels::cuda;

fn main() {
    // Display (not Debug) so an NVRTC log prints as the compiler wrote it.
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: cuda_ptx <output dir>")?;
    std::fs::create_dir_all(&dir)?;
    println!(
        "NVRTC loadable: {}; CUDA driver loadable: {}",
        cuda::nvrtc_available(),
        cuda::cuda_available()
    );
    for (name, arch, ptx) in cuda::compile_all()? {
        let src = ptx.to_src();
        // Every kernel the source claims to define must be an entry point of the PTX.
        let source = cuda::SOURCES.iter().find(|s| s.name == name).unwrap();
        for k in source.kernels {
            if !src.contains(&format!(".entry {k}(")) {
                return Err(format!("{name}.cu ({arch}): no PTX entry for kernel {k}").into());
            }
        }
        let path = format!("{dir}/{name}.{arch}.ptx");
        std::fs::write(&path, &src)?;
        println!("wrote {path} ({} bytes)", src.len());
    }
    // The path Gpu::new takes: NVRTC straight to machine code (an ELF CUBIN) for each arch.
    for source in cuda::SOURCES {
        for &arch in cuda::ARCHES {
            let bytes = cuda::cubin_bytes(source, arch)?;
            if !bytes.starts_with(b"\x7fELF") {
                return Err(format!(
                    "{}.cu ({arch}): NVRTC's CUBIN is not an ELF image",
                    source.name
                )
                .into());
            }
        }
    }
    println!("NVRTC CUBINs: every source, every arch");
    Ok(())
}
