# vLLM 0.33.0's texts for the stand-in (sourced by standin.sh). Each line is the one the corpus
# tests/vllm_corpus/vllm-0.33.0.yaml quotes, with its source in the wheel (file:line) beside it.
# The [file:line] in a log header is where vLLM's logger call sits.
EC_NAME=EngineCore                  # v1/engine/utils.py:289 (no DP rank for a single engine)
RAW_PREFIXED=0                      # the process name is in the log format (logger.py:28-32); raw stderr has none
TOP_USAGE='usage: vllm [-h] [-v]
            {chat,complete,serve,launch,bench,collect-env,download-kernels,preload,run-batch,snapshot}
            ...'                    # cli/main.py:47-57, argparse wraps it at 78 columns
MODULE_IGNORES_POSITIONAL=0         # the module form runs launchers/api_server/entry.py (deprecated)
DEFAULT_UTIL=0.92                   # config/cache.py:215
L_VERSION=startup.py:38
L_NONDEFAULT=startup.py:96
L_DEPRECATION=argparse_utils.py:330
L_MAXLEN=model.py:2170
L_ENGINE=core.py:139
L_START_LOAD=gpu_model_runner.py:4978
L_WEIGHTS=default_loader.py:506
L_MODEL_LOADING=gpu_model_runner.py:5088
L_COMPILE_START=monitor.py:40
L_CACHE_DIR=backends.py:1125
L_DYNAMO=backends.py:1187
L_COMPILE_GRAPH=backends.py:417
L_COMPILE_CACHED=backends.py:310
L_COMPILE_TOTAL=monitor.py:62
L_KV_MEM=gpu_worker.py:772
L_GRAPHS_DONE=gpu_model_runner.py:6516
L_INIT_ENGINE=core.py:405
L_TASKS=entry.py:135
L_STARTING=entry.py:139
L_ROUTES=launcher.py:188
L_ROUTE=launcher.py:196
L_SHUTDOWN=launcher.py:283
L_EC_ERROR=core.py:1584

# utils/argparse_utils.py:331-335
t_deprecation() { echo "With \`vllm serve\`, you should provide the model as a positional argument or in a config file instead of via the \`--model\` option. The \`--model\` option will be removed in a future version."; }
# entrypoints/common/startup.py:18 (the plain form, as with VLLM_DISABLE_LOG_LOGO)
t_version() { echo "vLLM server version $VERSION, serving model $MODEL"; }
# v1/engine/core.py:140, VllmConfig.__str__ (config/vllm.py:2811-2843)
t_engine_config() {
	if [ "$EAGER" = True ]; then cc="{'mode': <CompilationMode.NONE: 0>, 'cudagraph_mode': <CUDAGraphMode.NONE: 0>}"; else cc="{'mode': <CompilationMode.VLLM_COMPILE: 3>, 'cudagraph_mode': <CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>}"; fi
	echo "Initializing a V1 LLM engine (v$VERSION) with config: model='$MODEL', speculative_config=None, tokenizer='$MODEL', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, tokenizer_revision=None, trust_remote_code=$TRUST, dtype=$DTYPE, max_seq_len=$MAX_MODEL_LEN, download_dir=None, load_format=auto, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, decode_context_parallel_size=1, dcp_comm_backend=ag_rs, disable_custom_all_reduce=False, quantization=None, quantization_config=None, enforce_eager=$EAGER, aux_output_config=AuxOutputConfig(), kv_cache_dtype=auto, device_config=cuda, structured_outputs_config=StructuredOutputsConfig(backend='auto'), observability_config=ObservabilityConfig(), seed=0, served_model_name=$SERVED1, enable_prefix_caching=True, enable_chunked_prefill=True, pooler_config=None, compilation_config=$cc, kernel_config=KernelConfig()"
}
# gpu_model_runner.py:5089 (format_gib: round(x, 2))
t_model_loading() { echo "Model loading took 4.15 GiB memory and $1 seconds"; }
# compilation/monitor.py:40, backends.py:418 / :311, monitor.py:20
t_compile_start() { ec_info "$L_COMPILE_START" "Starting torch.compile"; }
t_compile_graph() { echo "Compiling a graph for compile range (1, $BATCHED) takes $1 s"; }
t_compile_cached() { echo "Directly load the compiled graph(s) for compile range (1, $BATCHED) from the cache, took $1 s"; }
t_compile_total() { echo "torch.compile took $1 s in total"; }
# v1/worker/gpu_worker.py:788 (CUDA graphs inside the budget since v0.21.0)
t_cudagraph_profiling() {
	[ "$EAGER" = True ] && return 0
	u=$(awk -v u="$GPU_UTIL" 'BEGIN { printf "%.4f", u }')
	lo=$(awk -v u="$GPU_UTIL" 'BEGIN { printf "%.4f", u - 0.017 }')
	hi=$(awk -v u="$GPU_UTIL" 'BEGIN { printf "%.4f", u + 0.017 }')
	ec_info gpu_worker.py:787 "CUDA graph memory profiling is enabled (default since v0.21.0). The current --gpu-memory-utilization=$u is equivalent to --gpu-memory-utilization=$lo without CUDA graph memory profiling. To maintain the same effective KV cache size as before, increase --gpu-memory-utilization to $hi. To disable, set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0."
}
# v1/core/kv_cache_utils.py:1148 (one line in this version)
t_kv_size() { ec_info kv_cache_utils.py:1147 "GPU KV cache size: 97,552 tokens, Maximum concurrency for $(commas "$MAX_MODEL_LEN") tokens per request: 23.82x"; }
t_init_engine() { echo "init engine (profile, create kv cache, warmup model) took $1 s (compilation: $2 s)"; }
# launchers/api_server/entry.py:135 / :139
t_tasks() { echo "Supported tasks: ['generate']"; }
t_starting() { echo "Starting vLLM server on http://$URL_HOST:$PORT"; }

# ------------------------------------------------------------- failures
t_cause() {
	case $FAIL in
	free-memory) # v1/worker/utils.py:763, requested = ceil(total x utilization) (utils.py:724)
		echo "ValueError: Free memory on device cuda:0 (5.81/11.94 GiB) on startup is less than desired GPU memory utilization ($(pyfloat "$GPU_UTIL"), $(fmt_gib "$(awk -v u="$GPU_UTIL" 'BEGIN { b = u * 11.94 * 1073741824; c = int(b); if (c < b) c++; printf "%.6f", c / 1073741824 }')") GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes." ;;
	no-cache-blocks) # v1/core/kv_cache_planning.py:58
		echo 'ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.' ;;
	max-seq-len) # v1/core/kv_cache_planning.py:74-78
		echo 'ValueError: To serve at least one request with the model'"'"'s max seq len (32768), (3.5 GiB KV cache is needed, which is larger than the available KV cache memory (1.2 GiB). Based on the available memory, the estimated maximum model length is 11216. Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.' ;;
	cuda-oom | weights-dont-fit) # torch's CUDACachingAllocator text
		echo "$TORCH_OOM" ;;
	esac
}
CUDA_OOM_AT=profile                 # an OOM while loading weights is weights-dont-fit in this version
# gpu_model_runner.py:5079-5086: logged before the OOM is re-raised
t_weights_dont_fit() { echo "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free memory for weights, increasing --tensor-parallel-size, or using --quantization. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more tips. (original error: ${TORCH_OOM#torch.OutOfMemoryError: })"; }
t_engine_frames() {
	cat <<FRAMES
  File "$PY/vllm/v1/engine/core.py", line 1575, in run_engine_core
    engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)
  File "$PY/vllm/v1/engine/core.py", line 1186, in __init__
    super().__init__(
FRAMES
	case $FAIL in
	free-memory) printf '%s\n' "  File \"$PY/vllm/v1/worker/gpu_worker.py\", line 542, in init_device" '    self.requested_memory = request_memory(init_snapshot, self.cache_config)' "  File \"$PY/vllm/v1/worker/utils.py\", line 761, in request_memory" '    raise ValueError(' ;;
	cuda-oom) printf '%s\n' "  File \"$PY/vllm/v1/worker/gpu_worker.py\", line 707, in determine_available_memory" '    self.model_runner.profile_run()' "  File \"$PY/torch/utils/_device.py\", line 104, in __torch_function__" '    return func(*args, **kwargs)' ;;
	weights-dont-fit) printf '%s\n' "  File \"$PY/vllm/v1/worker/gpu_model_runner.py\", line 5066, in load_model" '    self.model = model_loader.load_model(' ;;
	*) printf '%s\n' "  File \"$PY/vllm/v1/core/kv_cache_planning.py\", line 78, in check_enough_kv_cache_memory" '    raise ValueError(' ;;
	esac
}
t_wrapper() { echo "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'$EC_NAME': 1}"; }  # v1/engine/utils.py:1474

t_config_failure() {
	echo "Traceback (most recent call last):"
	case $FAIL in
	trust-remote-code | unsupported-arch | arch-removed | arch-plugin)
		cat <<FRAMES
  File "$PY/vllm/engine/arg_utils.py", line 1712, in create_model_config
    return ModelConfig(
  File "$PY/pydantic/_internal/_dataclasses.py", line 121, in __init__
    s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
FRAMES
		;;
	esac
	input="input_value=ArgsKwargs((), {'model': '$MODEL', 'runner': 'auto', 'convert': 'auto', 'tokenizer': '$MODEL', 'tokenizer_mode': 'auto', 'trust_remote_code': $TRUST, 'dtype': 'auto', 'seed': 0, 'max_model_len': $MAX_MODEL_LEN}), input_type=ArgsKwargs]"
	case $FAIL in
	trust-remote-code) # transformers 5.20.2 dynamic_module_utils.py:749, :788-791
		echo "  Value error, The repository $MODEL contains custom code which must be executed to correctly load the model. You can inspect the repository content at https://hf.co/$MODEL ."
		echo "Please pass the argument \`trust_remote_code=True\` to allow custom code to be run. [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.12/v/value_error" ;;
	unsupported-arch) # model_executor/models/registry.py:1250
		echo "  Value error, Model architectures ['${STANDIN_ARCH:-MyOCRForConditionalGeneration}'] are not supported for now. Supported architectures: dict_keys(['AfmoeForCausalLM', 'ApertusForCausalLM', 'AquilaModel', 'AquilaForCausalLM', 'ArceeForCausalLM', 'ArcticForCausalLM']) [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.12/v/value_error" ;;
	arch-removed) # model_executor/models/registry.py:1235
		echo "  Value error, Model architecture ${STANDIN_ARCH:-Phi4MultimodalForCausalLM} was supported in vLLM until v0.12.0, and is not supported anymore. Please use an older version of vLLM if you want to use this model architecture. [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.12/v/value_error" ;;
	arch-plugin) # model_executor/models/registry.py:1244
		echo "  Value error, Model architecture ${STANDIN_ARCH:-Florence2ForConditionalGeneration} is not supported in-tree anymore. Please install the plugin at https://github.com/vllm-project/bart-plugin if you want to use this model architecture. [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.12/v/value_error" ;;
	gated-repo) # huggingface_hub 2.4.0 utils/_http.py:890; transformers 5.20.2 utils/hub.py:611
		cat <<TEXT
  File "$PY/transformers/utils/hub.py", line 540, in cached_files
    hf_hub_download(
  File "$PY/huggingface_hub/utils/_http.py", line 890, in hf_raise_for_status
    raise _format(GatedRepoError, message, response) from e
huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-68b0c2a1-5d2c4e7f1a2b3c4d5e6f7a8b;0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b)

Cannot access gated repo for url https://huggingface.co/$MODEL/resolve/main/config.json.
Access to model $MODEL is restricted. You must have access to it and be authenticated to access it. Please log in.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "$PY/vllm/transformers_utils/config.py", line 831, in maybe_override_with_speculators
    config_dict, _ = PretrainedConfig.get_config_dict(
  File "$PY/transformers/utils/hub.py", line 611, in cached_files
    raise OSError(
OSError: You are trying to access a gated repo.
Make sure to have access to it at https://huggingface.co/$MODEL.
401 Client Error. (Request ID: Root=1-68b0c2a1-5d2c4e7f1a2b3c4d5e6f7a8b;0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b)

Cannot access gated repo for url https://huggingface.co/$MODEL/resolve/main/config.json.
Access to model $MODEL is restricted. You must have access to it and be authenticated to access it. Please log in.
TEXT
		;;
	repo-not-found) # huggingface_hub 2.4.0 utils/_http.py:947; transformers 5.20.2 utils/hub.py:570
		cat <<TEXT
  File "$PY/huggingface_hub/utils/_http.py", line 947, in hf_raise_for_status
    raise _format(RepositoryNotFoundError, message, response) from e
huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-68b0c2a1-0a1b2c3d4e5f60718293a4b5;1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809)

Repository Not Found for url: https://huggingface.co/$MODEL/resolve/main/config.json.
Please make sure you specified the correct \`repo_id\` and \`repo_type\`.
If you are trying to access a private or gated repo, make sure you are authenticated. For more details, see https://huggingface.co/docs/huggingface_hub/authentication
Invalid username or password.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "$PY/vllm/transformers_utils/config.py", line 831, in maybe_override_with_speculators
    config_dict, _ = PretrainedConfig.get_config_dict(
  File "$PY/transformers/utils/hub.py", line 570, in cached_files
    raise OSError(
OSError: $MODEL is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'
If this is a private repository, make sure to pass a token having permission to this repo either by logging in with \`hf auth login\` or by passing \`token=<your_token>\`
TEXT
		;;
	esac
}

# Where the port is bound, before the engine (launchers/launcher.py:372-379, create_server_socket :340-355)
BIND_FILE=vllm/entrypoints/launchers/launcher.py
BIND_SETUP_LINE=379
BIND_CREATE_LINE=353
KNOWN_FAILS="free-memory no-cache-blocks max-seq-len cuda-oom weights-dont-fit trust-remote-code unsupported-arch arch-removed arch-plugin gated-repo repo-not-found"
