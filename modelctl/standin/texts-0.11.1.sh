# vLLM 0.11.1's texts for the stand-in (sourced by standin.sh). Each line is the one the corpus
# tests/vllm_corpus/vllm-0.11.1.yaml quotes, with its source in the wheel (file:line) beside it.
# The [file:line] in a log header is where vLLM's logger call sits.
EC_NAME=EngineCore_DP0              # v1/engine/utils.py (EngineCore_DP<rank>)
RAW_PREFIXED=1                      # utils/system_utils.py:143-166: every stdout/stderr line prefixed
TOP_USAGE='usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ...'  # cli/main.py:25-31
MODULE_IGNORES_POSITIONAL=1         # entrypoints/openai/api_server.py:2084-2096: model_tag not copied
DEFAULT_UTIL=0.9                    # config/cache.py:50
L_VERSION=api_server.py:1977
L_NONDEFAULT=utils.py:253
L_DEPRECATION=argparse_utils.py:203
L_MAXLEN=model.py:1745
L_ENGINE=core.py:93
L_START_LOAD=gpu_model_runner.py:3255
L_WEIGHTS=default_loader.py:314
L_MODEL_LOADING=gpu_model_runner.py:3334
L_CACHE_DIR=backends.py:631
L_DYNAMO=backends.py:647
L_COMPILE_GRAPH=backends.py:282
L_COMPILE_CACHED=backends.py:210
L_COMPILE_TOTAL=monitor.py:34
L_KV_MEM=gpu_worker.py:359
L_GRAPHS_DONE=gpu_model_runner.py:4240
L_INIT_ENGINE=core.py:250
L_TASKS=api_server.py:1725
L_STARTING=api_server.py:2052
L_ROUTES=launcher.py:38
L_ROUTE=launcher.py:46
L_SHUTDOWN=launcher.py:99
L_EC_ERROR=core.py:842

# argparse_utils.py:204-207
t_deprecation() { echo "With \`vllm serve\`, you should provide the model as a positional argument or in a config file instead of via the \`--model\` option. The \`--model\` option will be removed in v0.13."; }
# api_server.py:1977
t_version() { echo "vLLM API server version $VERSION"; }
# v1/engine/core.py:94, VllmConfig.__str__ (config/vllm.py:1025-1052)
t_engine_config() {
	if [ "$EAGER" = True ]; then cc="{'level': None, 'mode': 0}"; else cc="{'level': None, 'mode': 3, 'cudagraph_mode': <CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>}"; fi
	echo "Initializing a V1 LLM engine (v$VERSION) with config: model='$MODEL', speculative_config=None, tokenizer='$MODEL', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, tokenizer_revision=None, trust_remote_code=$TRUST, dtype=$DTYPE, max_seq_len=$MAX_MODEL_LEN, download_dir=None, load_format=auto, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, disable_custom_all_reduce=False, quantization=None, enforce_eager=$EAGER, kv_cache_dtype=auto, device_config=cuda, structured_outputs_config=StructuredOutputsConfig(backend='auto', disable_fallback=False, disable_any_whitespace=False, disable_additional_properties=False, reasoning_parser='', reasoning_parser_plugin='', enable_in_reasoning=False), observability_config=ObservabilityConfig(show_hidden_metrics_for_version=None, otlp_traces_endpoint=None, collect_detailed_traces=None), seed=0, served_model_name=$SERVED1, enable_prefix_caching=True, enable_chunked_prefill=True, pooler_config=None, compilation_config=$cc"
}
# gpu_model_runner.py:3335
t_model_loading() { echo "Model loading took 4.1523 GiB memory and $1 seconds"; }
# compilation/backends.py:283 / :211 (dynamic shape), monitor.py:35
t_compile_graph() { echo "Compiling a graph for dynamic shape takes $1 s"; }
t_compile_cached() { echo "Directly load the compiled graph(s) for dynamic shape from the cache, took $1 s"; }
t_compile_total() { echo "torch.compile takes $1 s in total"; }
t_compile_start() { :; }            # 0.33 only
t_cudagraph_profiling() { :; }      # 0.33 only
# gpu_worker.py:360, kv_cache_utils.py:1229 and :1235 (two lines)
t_kv_size() {
	ec_info kv_cache_utils.py:1229 "GPU KV cache size: 97,552 tokens"
	ec_info kv_cache_utils.py:1234 "Maximum concurrency for $(commas "$MAX_MODEL_LEN") tokens per request: 23.82x"
}
t_init_engine() { echo "init engine (profile, create kv cache, warmup model) took $1 seconds"; }
# api_server.py:1725 / :2053
t_tasks() { echo "Supported tasks: ['generate']"; }
t_starting() { echo "Starting vLLM API server 0 on http://$URL_HOST:$PORT"; }

# ------------------------------------------------------------- failures
# The exception line(s) each failure ends with.
t_cause() {
	case $FAIL in
	free-memory) # v1/worker/gpu_worker.py:248 (no device name in this version, float, no ceil)
		echo "ValueError: Free memory on device (5.81/11.94 GiB) on startup is less than desired GPU memory utilization ($(pyfloat "$GPU_UTIL"), $(gib2 "$(awk -v u="$GPU_UTIL" 'BEGIN { print u * 11.94 }')") GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes." ;;
	no-cache-blocks) # v1/core/kv_cache_utils.py:687
		echo 'ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.' ;;
	max-seq-len) # v1/core/kv_cache_utils.py:704-708 ("models's" is vLLM's)
		echo 'ValueError: To serve at least one request with the models'"'"'s max seq len (32768), (3.50 GiB KV cache is needed, which is larger than the available KV cache memory (1.20 GiB). Based on the available memory, the estimated maximum model length is 11216. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.' ;;
	cuda-oom | weights-dont-fit) # torch's CUDACachingAllocator text (while loading the weights)
		echo "$TORCH_OOM" ;;
	esac
}
# Where a failure is raised: in the engine's init_device, weight load, or KV check; or while the
# API server reads the model's config (before the engine exists).
CUDA_OOM_AT=load                    # 0.11.1: an OOM while loading weights is not wrapped
t_engine_frames() {
	cat <<FRAMES
  File "$PY/vllm/v1/engine/core.py", line 833, in run_engine_core
    engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)
  File "$PY/vllm/v1/engine/core.py", line 606, in __init__
    super().__init__(
  File "$PY/vllm/v1/engine/core.py", line 102, in __init__
FRAMES
	case $FAIL in
	free-memory) printf '%s\n' '    self.model_executor = executor_class(vllm_config)' "  File \"$PY/vllm/v1/worker/gpu_worker.py\", line 245, in init_device" '    raise ValueError(' ;;
	cuda-oom | weights-dont-fit) printf '%s\n' '    self.model_executor = executor_class(vllm_config)' "  File \"$PY/vllm/v1/worker/gpu_model_runner.py\", line 3262, in load_model" '    self.model = model_loader.load_model(' ;;
	*) printf '%s\n' '    num_gpu_blocks, num_cpu_blocks, kv_cache_config = self._initialize_kv_caches(' "  File \"$PY/vllm/v1/core/kv_cache_utils.py\", line 708, in check_enough_kv_cache_memory" '    raise ValueError(' ;;
	esac
}
t_wrapper() { echo "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'$EC_NAME': 1}"; }  # v1/engine/utils.py:965

# Failures while the API server builds the config (APIServer, before the engine line).
t_config_failure() {
	echo "Traceback (most recent call last):"
	case $FAIL in
	trust-remote-code | unsupported-arch | arch-removed)
		cat <<FRAMES
  File "$PY/vllm/engine/arg_utils.py", line 1167, in create_engine_config
    model_config = self.create_model_config()
  File "$PY/vllm/engine/arg_utils.py", line 1025, in create_model_config
    return ModelConfig(
  File "$PY/pydantic/_internal/_dataclasses.py", line 123, in __init__
    s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
FRAMES
		;;
	esac
	input="input_value=ArgsKwargs((), {'model': '$MODEL', 'runner': 'auto', 'convert': 'auto', 'tokenizer': '$MODEL', 'tokenizer_mode': 'auto', 'trust_remote_code': $TRUST, 'dtype': 'auto', 'seed': 0, 'max_model_len': $MAX_MODEL_LEN}), input_type=ArgsKwargs]"
	case $FAIL in
	trust-remote-code) # transformers 4.57.1 dynamic_module_utils.py:743, :782-785
		echo "  Value error, The repository $MODEL contains custom code which must be executed to correctly load the model. You can inspect the repository content at https://hf.co/$MODEL ."
		echo "Please pass the argument \`trust_remote_code=True\` to allow custom code to be run. [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.11/v/value_error" ;;
	unsupported-arch) # model_executor/models/registry.py:786
		echo "  Value error, Model architectures ['${STANDIN_ARCH:-MyOCRForConditionalGeneration}'] are not supported for now. Supported architectures: dict_keys(['AfmoeForCausalLM', 'ApertusForCausalLM', 'AquilaModel', 'AquilaForCausalLM', 'ArceeForCausalLM', 'ArcticForCausalLM']) [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.11/v/value_error" ;;
	arch-removed) # model_executor/models/registry.py:779
		echo "  Value error, Model architecture ${STANDIN_ARCH:-Florence2ForConditionalGeneration} was supported in vLLM until v0.10.2, and is not supported anymore. Please use an older version of vLLM if you want to use this model architecture. [type=value_error, $input"
		echo "    For further information visit https://errors.pydantic.dev/2.11/v/value_error" ;;
	gated-repo) # huggingface_hub 0.36.0 utils/_http.py:417; transformers 4.57.1 utils/hub.py:544
		cat <<TEXT
  File "$PY/transformers/utils/hub.py", line 479, in cached_files
    hf_hub_download(
  File "$PY/huggingface_hub/utils/_http.py", line 426, in hf_raise_for_status
    raise _format(GatedRepoError, message, response) from e
huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-68b0c2a1-5d2c4e7f1a2b3c4d5e6f7a8b;0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b)

Cannot access gated repo for url https://huggingface.co/$MODEL/resolve/main/config.json.
Access to model $MODEL is restricted. You must have access to it and be authenticated to access it. Please log in.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "$PY/vllm/transformers_utils/config.py", line 530, in maybe_override_with_speculators
    config_dict, _ = PretrainedConfig.get_config_dict(
  File "$PY/transformers/utils/hub.py", line 543, in cached_files
    raise OSError(
OSError: You are trying to access a gated repo.
Make sure to have access to it at https://huggingface.co/$MODEL.
401 Client Error. (Request ID: Root=1-68b0c2a1-5d2c4e7f1a2b3c4d5e6f7a8b;0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b)

Cannot access gated repo for url https://huggingface.co/$MODEL/resolve/main/config.json.
Access to model $MODEL is restricted. You must have access to it and be authenticated to access it. Please log in.
TEXT
		;;
	repo-not-found) # huggingface_hub 0.36.0 utils/_http.py:446; transformers 4.57.1 utils/hub.py:512
		cat <<TEXT
  File "$PY/huggingface_hub/utils/_http.py", line 459, in hf_raise_for_status
    raise _format(RepositoryNotFoundError, message, response) from e
huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-68b0c2a1-0a1b2c3d4e5f60718293a4b5;1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809)

Repository Not Found for url: https://huggingface.co/$MODEL/resolve/main/config.json.
Please make sure you specified the correct \`repo_id\` and \`repo_type\`.
If you are trying to access a private or gated repo, make sure you are authenticated. For more details, see https://huggingface.co/docs/huggingface_hub/authentication
Invalid username or password.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "$PY/vllm/transformers_utils/config.py", line 530, in maybe_override_with_speculators
    config_dict, _ = PretrainedConfig.get_config_dict(
  File "$PY/transformers/utils/hub.py", line 511, in cached_files
    raise OSError(
OSError: $MODEL is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'
If this is a private repository, make sure to pass a token having permission to this repo either by logging in with \`hf auth login\` or by passing \`token=<your_token>\`
TEXT
		;;
	esac
}

# Where the port is bound, before the engine (api_server.py:1988-1995, create_server_socket :1936-1946)
BIND_FILE=vllm/entrypoints/openai/api_server.py
BIND_SETUP_LINE=1995
BIND_CREATE_LINE=1944
KNOWN_FAILS="free-memory no-cache-blocks max-seq-len cuda-oom weights-dont-fit trust-remote-code unsupported-arch arch-removed gated-repo repo-not-found"
