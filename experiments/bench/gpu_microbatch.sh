# The GPU machine's run of experiments/bench/microbatch.py (transformers on CUDA, random weights of
# the two packaged architectures): `run` with carry [".bench_arch"], command `bash experiments/bench/gpu_microbatch.sh`.
export PYTHONPATH=.
for arch in gemma-3-270m smollm2-135m; do
  for callers in 8; do  # 32 callers x 4 steps did not finish within 150 s per run on the H200 (HF generate at ~18 ms/token)
    timeout 150 python3 experiments/bench/microbatch.py --random-arch .bench_arch/$arch --device cuda \
      --callers $callers --steps 4 --max-tokens 48 --repeats 2 2>&1 | grep -v "Loading weights" | tail -3
  done
done
