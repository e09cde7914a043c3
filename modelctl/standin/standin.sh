#!/bin/sh
# Stand-in for the vllm/vllm-openai image (busybox sh, runs as PID 1).
#
# It behaves like vLLM's OpenAI server where a supervisor cares:
#   - accepts vLLM's command line: an optional leading `vllm serve` or
#     `python3 -m vllm.entrypoints.openai.api_server`, then `--model X`
#     (`--model=X`, or a positional model right after `serve`), `--port N`
#     (8000), `--host H` (0.0.0.0), `--served-model-name NAME...` (the model),
#     `--max-model-len N` (4096; 32k/32K forms too), `--gpu-memory-utilization F`
#     (0.9, only echoed in the free-memory failure); every other flag, with or
#     without a value, is accepted and ignored;
#   - logs vLLM 0.11-style lines, waits STANDIN_LOAD_SECONDS while "loading"
#     (connection refused meanwhile), then serves GET /health (200, empty),
#     GET /v1/models (vLLM's JSON), GET /version, and POST /v1/chat/completions
#     and /v1/completions (OpenAI's JSON; SSE when "stream": true), through
#     busybox nc and standin-http.sh, one connection each;
#   - SIGTERM/SIGINT: stops the server, logs the shutdown, exits 0 at once.
#
# Environment:
#   STANDIN_LOAD_SECONDS  load time before listening (default 1; fractions ok)
#   STANDIN_FAIL=<kind>   after the load time, print vLLM's log for that
#                         failure and exit 1. Kinds: free-memory,
#                         no-cache-blocks, max-seq-len, cuda-oom,
#                         trust-remote-code, unsupported-arch, gated-repo
#   STANDIN_HANG=1        never listen, stay alive (SIGTERM still ends it)
#   STANDIN_IGNORE_SIGTERM=1  ignore SIGTERM (docker kills it after the grace)
#   STANDIN_VERSION       version reported (default 0.11.1)
#   STANDIN_WWW           where the static answers are written (default /www)
#   STANDIN_TOKENS        words per completion (default 8; max_tokens caps it)
#   STANDIN_TOKEN_DELAY   seconds between words, streaming or not (default 0)

VERSION=${STANDIN_VERSION:-0.11.1}
LOAD=${STANDIN_LOAD_SECONDS:-1}
FAIL=${STANDIN_FAIL:-}
HANG=${STANDIN_HANG:-}
IGNORE_TERM=${STANDIN_IGNORE_SIGTERM:-}
WWW=${STANDIN_WWW:-/www}

API_PID=$$
EC_PID=$(( $$ + 200 ))
PY=/usr/local/lib/python3.12/dist-packages
STATE=starting      # starting | loading | serving
CHILD=

ts() { date '+%m-%d %H:%M:%S'; }
api() { echo "(APIServer pid=$API_PID) $1 $(ts) [$2] $3"; }
info() { api INFO "$1" "$2"; }
ec_info() { echo "(EngineCore_DP0 pid=$EC_PID) INFO $(ts) [$1] $2"; }
# vLLM prefixes every line a process writes, blank lines included.
api_prefix() { sed "s/^/(APIServer pid=$API_PID) /"; }
ec_prefix() { sed "s/^/(EngineCore_DP0 pid=$EC_PID) /"; }
# logger.exception(): every line carries the record's header.
ec_error_log() { sed "s/^/(EngineCore_DP0 pid=$EC_PID) ERROR $(ts) [core.py:708] /"; }

usage_error() {
	echo "usage: vllm serve [model_tag] [options]" >&2
	echo "vllm serve: error: $1" >&2
	exit 2
}

# ---------------------------------------------------------------- arguments
case ${1:-} in
vllm)
	shift
	[ "${1:-}" = serve ] && shift
	;;
serve)
	shift
	;;
python | python3 | python3.* | */python | */python3 | */python3.*)
	if [ "${2:-}" = -m ]; then shift 3 2>/dev/null || set --; fi
	;;
esac

MODEL_TAG=
MODEL_FLAG=
PORT=8000
HOST=
SERVED=
MAXLEN=
GPU_UTIL=0.9
TRUST=False
NONDEFAULT=
LIST_FLAG=          # the flag taking further values (nargs="+"), if any
SEEN_FLAG=
LAST_WAS_BOOL=

is_bool_flag() {
	case $1 in
	--no-* | --enable-* | --disable-*) return 0 ;;
	--trust-remote-code | --enforce-eager | --skip-tokenizer-init | \
		--async-scheduling | --headless | --allow-credentials | \
		--return-tokens-as-token-ids | --language-model-only | \
		--use-tqdm-on-load | --log-error-stack | --calculate-kv-scales | \
		--fully-sharded-loras | --kv-sharing-fast-prefill | \
		--ray-workers-use-nsight | --data-parallel-hybrid-lb | \
		--data-parallel-external-lb | --worker-use-ray | \
		--use-v2-block-manager | --multi-step-stream-outputs | \
		--ssl-refresh | --help | -h | --version) return 0 ;;
	esac
	return 1
}

is_list_flag() {
	case $1 in
	--served-model-name | --lora-modules | --cuda-graph-sizes | --api-key | \
		--middleware | --prompt-adapters) return 0 ;;
	esac
	return 1
}

pykey() { k=${1#--}; k=${k#-}; echo "${k//-/_}"; }
add_nondefault() { NONDEFAULT="$NONDEFAULT, '$1': $2"; }

while [ $# -gt 0 ]; do
	arg=$1
	shift
	case $arg in
	--*=*)
		name=${arg%%=*}
		val=${arg#*=}
		hasval=1
		;;
	-[0-9]* | -)
		# a negative number or "-" is a value
		name=
		;;
	-*)
		name=$arg
		val=
		hasval=0
		;;
	*)
		name=
		;;
	esac
	if [ -z "$name" ]; then
		# A word that is not a flag.
		if [ -n "$LIST_FLAG" ]; then
			[ "$LIST_FLAG" = --served-model-name ] && SERVED="$SERVED
$arg"
			continue
		fi
		if [ -z "$MODEL_TAG" ] && [ -z "$SEEN_FLAG" -o -n "$LAST_WAS_BOOL" ]; then
			MODEL_TAG=$arg
		fi
		continue
	fi
	SEEN_FLAG=1
	LIST_FLAG=
	LAST_WAS_BOOL=
	name=${name//_/-}
	if [ "$hasval" = 0 ]; then
		if is_bool_flag "$name"; then
			LAST_WAS_BOOL=1
			case $name in
			--no-*) add_nondefault "$(pykey "${name#--no-}")" False ;;
			--help | -h | --version) ;;
			*) add_nondefault "$(pykey "$name")" True ;;
			esac
			[ "$name" = --trust-remote-code ] && TRUST=True
			continue
		fi
		if [ $# -gt 0 ]; then
			case $1 in
			-[0-9]* | -) val=$1; shift; hasval=1 ;;
			-*) ;;
			*) val=$1; shift; hasval=1 ;;
			esac
		fi
		if [ "$hasval" = 0 ]; then
			# a flag we do not know, without a value: accept it as a switch
			LAST_WAS_BOOL=1
			add_nondefault "$(pykey "$name")" True
			continue
		fi
	fi
	case $name in
	--model)
		MODEL_FLAG=$val
		;;
	--port)
		case $val in
		'' | *[!0-9]*) usage_error "argument --port: invalid int value: '$val'" ;;
		esac
		PORT=$val
		;;
	--host)
		HOST=$val
		;;
	--served-model-name)
		SERVED=$val
		LIST_FLAG=$name
		;;
	--max-model-len)
		case $val in
		-1 | auto) MAXLEN= ;;
		*[0-9]) case $val in *[!0-9]*) MAXLEN=bad ;; *) MAXLEN=$val ;; esac ;;
		*[0-9]k) MAXLEN=$(( ${val%k} * 1000 )) ;;
		*[0-9]K) MAXLEN=$(( ${val%K} * 1024 )) ;;
		*[0-9]m) MAXLEN=$(( ${val%m} * 1000000 )) ;;
		*[0-9]M) MAXLEN=$(( ${val%M} * 1048576 )) ;;
		*) MAXLEN=bad ;;
		esac 2>/dev/null
		case $MAXLEN in
		bad) usage_error "argument --max-model-len: Invalid value '$val' for --max-model-len." ;;
		esac
		;;
	--gpu-memory-utilization)
		GPU_UTIL=$val
		add_nondefault gpu_memory_utilization "$val"
		;;
	*)
		is_list_flag "$name" && LIST_FLAG=$name
		add_nondefault "$(pykey "$name")" "'$val'"
		;;
	esac
done

# `vllm serve MODEL` wins over `--model`, as in vLLM.
MODEL=${MODEL_TAG:-${MODEL_FLAG:-Qwen/Qwen3-0.6B}}
[ -n "$SERVED" ] || SERVED=$MODEL
MAX_MODEL_LEN=${MAXLEN:-4096}
LISTEN_HOST=${HOST:-0.0.0.0}
case $LISTEN_HOST in
*:*) URL_HOST="[$LISTEN_HOST]" ;;
*) URL_HOST=$LISTEN_HOST ;;
esac

# ------------------------------------------------------------------ signals
wait_child() {
	# `wait` returns early when a trapped signal arrives; wait again unless
	# the handler ended the script.
	while kill -0 "$1" 2>/dev/null; do
		wait "$1"
	done
	wait "$1" 2>/dev/null
}

on_term() {
	trap '' TERM INT
	if [ "$STATE" = serving ]; then
		info launcher.py:99 "Shutting down FastAPI HTTP server."
	fi
	[ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null
	if [ "$STATE" = serving ]; then
		echo "(APIServer pid=$API_PID) INFO:     Shutting down"
		echo "(APIServer pid=$API_PID) INFO:     Waiting for application shutdown."
		echo "(APIServer pid=$API_PID) INFO:     Application shutdown complete."
	else
		info api_server.py:1926 "Shutting down (SIGTERM received while $STATE)."
	fi
	exit 0
}

if [ -n "$IGNORE_TERM" ] && [ "$IGNORE_TERM" != 0 ]; then
	trap 'api WARNING standin "SIGTERM received and ignored (STANDIN_IGNORE_SIGTERM=1)"' TERM
else
	trap on_term TERM
fi
trap on_term INT

pause() {
	# Sleep $1 seconds in a way SIGTERM can interrupt.
	case $1 in
	'' | 0 | 0.0 | 0.00) return 0 ;;
	esac
	sleep "$1" &
	CHILD=$!
	wait_child "$CHILD"
	CHILD=
}

case $LOAD in
'' | *[!0-9.]* | *.*.*)
	api WARNING standin "STANDIN_LOAD_SECONDS='$LOAD' is not a number; using 1"
	LOAD=1
	;;
esac

# ---------------------------------------------------------------- start-up
case $FAIL in
'' | free-memory | no-cache-blocks | max-seq-len | cuda-oom | trust-remote-code | unsupported-arch | gated-repo) ;;
*)
	echo "standin: unknown STANDIN_FAIL='$FAIL' (known: free-memory no-cache-blocks max-seq-len cuda-oom trust-remote-code unsupported-arch gated-repo)" >&2
	exit 1
	;;
esac

info api_server.py:1839 "vLLM API server version $VERSION"
{
	printf "{"
	[ -n "$MODEL_TAG" ] && printf "'model_tag': '%s', " "$MODEL_TAG"
	[ -n "$HOST" ] && printf "'host': '%s', " "$HOST"
	[ "$PORT" != 8000 ] && printf "'port': %s, " "$PORT"
	printf "'model': '%s'" "$MODEL"
	if [ "$SERVED" != "$MODEL" ]; then
		printf ", 'served_model_name': ["
		sep=
		for n in $SERVED; do printf "%s'%s'" "$sep" "$n"; sep=", "; done
		printf "]"
	fi
	[ -n "$MAXLEN" ] && printf ", 'max_model_len': %s" "$MAXLEN"
	printf "%s}" "$NONDEFAULT"
} | { read -r args; info utils.py:233 "non-default args: $args"; }

# The static answers, written before anything listens.
json_escape() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
random_hex() {
	od -An -tx1 -N16 /dev/urandom 2>/dev/null | tr -d ' \n'
}
CREATED=$(date +%s)
mkdir -p "$WWW/v1" || { echo "standin: cannot create $WWW/v1" >&2; exit 1; }
: >"$WWW/health"
printf '{"version":"%s"}' "$VERSION" >"$WWW/version"
{
	printf '{"object":"list","data":['
	sep=
	for name in $SERVED; do
		perm=$(random_hex)
		[ -n "$perm" ] || perm=$(printf '%032x' "$CREATED")
		printf '%s{"id":"%s","object":"model","created":%s,"owned_by":"vllm","root":"%s","parent":null,"max_model_len":%s,"permission":[{"id":"modelperm-%s","object":"model_permission","created":%s,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]}' \
			"$sep" "$(json_escape "$name")" "$CREATED" "$(json_escape "$MODEL")" \
			"$MAX_MODEL_LEN" "$perm" "$CREATED"
		sep=,
	done
	printf ']}'
} >"$WWW/v1/models.tmp" && mv "$WWW/v1/models.tmp" "$WWW/v1/models"

# --------------------------------------------------------------- failures
# Texts are vLLM 0.11's (checked against its source and users' logs).
gib() { awk -v x="$1" 'BEGIN { v = sprintf("%.2f", x); sub(/0$/, "", v); if (v ~ /\.$/) v = v "0"; print v }'; }
pyfloat() { awk -v x="$1" 'BEGIN { v = x + 0; if (v == int(v)) v = v ".0"; print v }'; }

cause_text() {
	case $FAIL in
	free-memory)
		util=$(pyfloat "$GPU_UTIL")
		want=$(gib "$(awk -v u="$GPU_UTIL" 'BEGIN { print u * 11.94 }')")
		echo "ValueError: Free memory on device cuda:0 (5.81/11.94 GiB) on startup is less than desired GPU memory utilization ($util, $want GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
		;;
	no-cache-blocks)
		echo 'ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.'
		;;
	max-seq-len)
		echo 'ValueError: To serve at least one request with the models'"'"'s max seq len (32768), (3.50 GiB KV cache is needed, which is larger than the available KV cache memory (1.20 GiB). Based on the available memory, the estimated maximum model length is 11216. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.'
		;;
	cuda-oom)
		echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 11.94 GiB of which 512.00 MiB is free. Including non-PyTorch memory, this process has 11.42 GiB memory in use. Of the allocated memory 10.93 GiB is allocated by PyTorch, and 197.35 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)'
		;;
	esac
}

# The engine-core frames down to where each failure is raised.
engine_frames() {
	cat <<EOF
  File "$PY/vllm/v1/engine/core.py", line 699, in run_engine_core
    engine_core = EngineCoreProc(*args, **kwargs)
                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/engine/core.py", line 498, in __init__
    super().__init__(vllm_config, executor_class, log_stats,
EOF
	case $FAIL in
	free-memory | cuda-oom)
		cat <<EOF
  File "$PY/vllm/v1/engine/core.py", line 83, in __init__
    self.model_executor = executor_class(vllm_config)
                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/executor/executor_base.py", line 54, in __init__
    self._init_executor()
  File "$PY/vllm/executor/uniproc_executor.py", line 54, in _init_executor
EOF
		;;
	esac
	case $FAIL in
	free-memory)
		cat <<EOF
    self.collective_rpc("init_device")
  File "$PY/vllm/executor/uniproc_executor.py", line 83, in collective_rpc
    return [run_method(self.driver_worker, method, args, kwargs)]
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/utils/__init__.py", line 3122, in run_method
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/worker/worker_base.py", line 259, in init_device
    self.worker.init_device()  # type: ignore
    ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/worker/gpu_worker.py", line 201, in init_device
    raise ValueError(
EOF
		;;
	cuda-oom)
		cat <<EOF
    self.collective_rpc("load_model")
  File "$PY/vllm/executor/uniproc_executor.py", line 83, in collective_rpc
    return [run_method(self.driver_worker, method, args, kwargs)]
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/utils/__init__.py", line 3122, in run_method
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/worker/gpu_worker.py", line 233, in load_model
    self.model_runner.load_model(eep_scale_up=eep_scale_up)
  File "$PY/vllm/v1/worker/gpu_model_runner.py", line 2615, in load_model
    self.model = model_loader.load_model(
                 ^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/model_executor/model_loader/base_loader.py", line 49, in load_model
    model = initialize_model(
            ^^^^^^^^^^^^^^^^^
  File "$PY/torch/utils/_device.py", line 104, in __torch_function__
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
EOF
		;;
	no-cache-blocks | max-seq-len)
		cat <<EOF
  File "$PY/vllm/v1/engine/core.py", line 92, in __init__
    self._initialize_kv_caches(vllm_config)
  File "$PY/vllm/v1/engine/core.py", line 199, in _initialize_kv_caches
    kv_cache_configs = get_kv_cache_configs(vllm_config, kv_cache_specs,
                       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/core/kv_cache_utils.py", line 1243, in get_kv_cache_configs
    check_enough_kv_cache_memory(vllm_config, kv_cache_spec_one_worker,
  File "$PY/vllm/v1/core/kv_cache_utils.py", line 716, in check_enough_kv_cache_memory
    _check_enough_kv_cache_memory(
  File "$PY/vllm/v1/core/kv_cache_utils.py", line 681, in _check_enough_kv_cache_memory
    raise ValueError(
EOF
		;;
	esac
}

api_frames_head() {
	cat <<EOF
Traceback (most recent call last):
  File "/usr/local/bin/vllm", line 10, in <module>
    sys.exit(main())
             ^^^^^^
  File "$PY/vllm/entrypoints/cli/main.py", line 73, in main
    args.dispatch_function(args)
  File "$PY/vllm/entrypoints/cli/serve.py", line 59, in cmd
    uvloop.run(run_server(args))
  File "$PY/uvloop/__init__.py", line 109, in run
    return __asyncio.run(
           ^^^^^^^^^^^^^^
  File "/usr/lib/python3.12/asyncio/runners.py", line 195, in run
    return runner.run(main)
           ^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.12/asyncio/runners.py", line 118, in run
    return self._loop.run_until_complete(task)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "uvloop/loop.pyx", line 1518, in uvloop.loop.Loop.run_until_complete
  File "$PY/uvloop/__init__.py", line 61, in wrapper
    return await main
           ^^^^^^^^^^
  File "$PY/vllm/entrypoints/openai/api_server.py", line 1884, in run_server
    await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)
  File "$PY/vllm/entrypoints/openai/api_server.py", line 1902, in run_server_worker
    async with build_async_engine_client(
               ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.12/contextlib.py", line 210, in __aenter__
    return await anext(self.gen)
           ^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/entrypoints/openai/api_server.py", line 180, in build_async_engine_client
    async with build_async_engine_client_from_engine_args(
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.12/contextlib.py", line 210, in __aenter__
    return await anext(self.gen)
           ^^^^^^^^^^^^^^^^^^^^^
EOF
}

api_frames_config() {
	cat <<EOF
  File "$PY/vllm/entrypoints/openai/api_server.py", line 206, in build_async_engine_client_from_engine_args
    vllm_config = engine_args.create_engine_config(usage_context=usage_context)
                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
EOF
}

fail_engine_core() {
	cause=$(cause_text)
	{
		echo "EngineCore failed to start."
		echo "Traceback (most recent call last):"
		engine_frames
		echo "$cause"
	} | ec_error_log
	{
		echo "Process EngineCore_DP0:"
		echo "Traceback (most recent call last):"
		cat <<EOF
  File "/usr/lib/python3.12/multiprocessing/process.py", line 314, in _bootstrap
    self.run()
  File "/usr/lib/python3.12/multiprocessing/process.py", line 108, in run
    self._target(*self._args, **self._kwargs)
  File "$PY/vllm/v1/engine/core.py", line 712, in run_engine_core
    raise e
EOF
		engine_frames
		echo "$cause"
	} | ec_prefix >&2
	{
		api_frames_head
		cat <<EOF
  File "$PY/vllm/entrypoints/openai/api_server.py", line 225, in build_async_engine_client_from_engine_args
    async_llm = AsyncLLM.from_vllm_config(
                ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/utils/__init__.py", line 1572, in inner
    return fn(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/engine/async_llm.py", line 207, in from_vllm_config
    return cls(
           ^^^^
  File "$PY/vllm/v1/engine/async_llm.py", line 134, in __init__
    self.engine_core = EngineCoreClient.make_async_mp_client(
                       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/engine/core_client.py", line 102, in make_async_mp_client
    return AsyncMPClient(*client_args)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/v1/engine/core_client.py", line 769, in __init__
    super().__init__(
  File "$PY/vllm/v1/engine/core_client.py", line 448, in __init__
    with launch_core_engines(vllm_config, executor_class,
         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.12/contextlib.py", line 144, in __exit__
    next(self.gen)
  File "$PY/vllm/v1/engine/utils.py", line 732, in launch_core_engines
    wait_for_engine_startup(
  File "$PY/vllm/v1/engine/utils.py", line 785, in wait_for_engine_startup
    raise RuntimeError("Engine core initialization failed. "
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
EOF
	} | api_prefix >&2
	exit 1
}

fail_config() {
	{
		case $FAIL in
		trust-remote-code)
			cat <<EOF
Traceback (most recent call last):
  File "$PY/vllm/transformers_utils/config.py", line 103, in parse
    config = AutoConfig.from_pretrained(
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/transformers/models/auto/configuration_auto.py", line 1331, in from_pretrained
    trust_remote_code = resolve_trust_remote_code(
                        ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/transformers/dynamic_module_utils.py", line 744, in resolve_trust_remote_code
    raise ValueError(
ValueError: Loading $MODEL requires you to execute the configuration file in that repo on your local machine. Make sure you have read the code there to avoid malicious use, then set the option \`trust_remote_code=True\` to remove this error.

The above exception was the direct cause of the following exception:

EOF
			api_frames_head
			api_frames_config
			cat <<EOF
  File "$PY/vllm/engine/arg_utils.py", line 1167, in create_engine_config
    model_config = self.create_model_config()
                   ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/engine/arg_utils.py", line 1025, in create_model_config
    return ModelConfig(
           ^^^^^^^^^^^^
  File "$PY/vllm/config/model.py", line 463, in __post_init__
    hf_config = get_config(self.hf_config_path or self.model,
                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/transformers_utils/config.py", line 537, in get_config
    config_dict, config = config_parser.parse(
                          ^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/transformers_utils/config.py", line 121, in parse
    raise RuntimeError(err_msg) from e
RuntimeError: Failed to load the model config. If the model is a custom model not yet available in the HuggingFace transformers library, consider setting \`trust_remote_code=True\` in LLM or using the \`--trust-remote-code\` flag in the CLI.
EOF
			;;
		unsupported-arch)
			api_frames_head
			api_frames_config
			cat <<EOF
  File "$PY/vllm/engine/arg_utils.py", line 1167, in create_engine_config
    model_config = self.create_model_config()
                   ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/vllm/engine/arg_utils.py", line 1025, in create_model_config
    return ModelConfig(
           ^^^^^^^^^^^^
  File "$PY/pydantic/_internal/_dataclasses.py", line 123, in __init__
    s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
  Value error, Model architectures ['DotsOCRForCausalLM'] are not supported for now. Supported architectures: dict_keys(['ApertusForCausalLM', 'AquilaModel', 'AquilaForCausalLM', 'ArceeForCausalLM', 'ArcticForCausalLM', 'MiniMaxForCausalLM', 'MiniMaxText01ForCausalLM', 'MiniMaxM1ForCausalLM', 'BaiChuanForCausalLM', 'BaichuanForCausalLM', 'BailingMoeForCausalLM', 'BambaForCausalLM', 'BloomForCausalLM', 'ChatGLMModel', 'ChatGLMForConditionalGeneration', 'CohereForCausalLM', 'Cohere2ForCausalLM', 'DbrxForCausalLM', 'DeciLMForCausalLM', 'DeepseekForCausalLM', 'DeepseekV2ForCausalLM', 'DeepseekV3ForCausalLM', 'Gemma2ForCausalLM', 'Gemma3ForCausalLM', 'GPT2LMHeadModel', 'LlamaForCausalLM', 'MistralForCausalLM', 'MixtralForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM', 'Qwen3MoeForCausalLM', 'Qwen2VLForConditionalGeneration', 'Qwen2_5_VLForConditionalGeneration', 'Qwen3VLForConditionalGeneration', 'TransformersForCausalLM', 'TransformersForMultimodalLM']) [type=value_error, input_value=ArgsKwargs((), {'model': ...attention_dtype': None}), input_type=ArgsKwargs]
    For further information visit https://errors.pydantic.dev/2.11/v/value_error
EOF
			;;
		gated-repo)
			cat <<EOF
Traceback (most recent call last):
  File "$PY/huggingface_hub/utils/_http.py", line 409, in hf_raise_for_status
    response.raise_for_status()
  File "$PY/requests/models.py", line 1026, in raise_for_status
    raise HTTPError(http_error_msg, response=self)
requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://huggingface.co/$MODEL/resolve/main/config.json

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "$PY/transformers/utils/hub.py", line 479, in cached_files
    hf_hub_download(
  File "$PY/huggingface_hub/utils/_validators.py", line 114, in _inner_fn
    return fn(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^
  File "$PY/huggingface_hub/file_download.py", line 1010, in hf_hub_download
    return _hf_hub_download_to_cache_dir(
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/huggingface_hub/file_download.py", line 1117, in _hf_hub_download_to_cache_dir
    _raise_on_head_call_error(head_call_error, force_download, local_files_only)
  File "$PY/huggingface_hub/file_download.py", line 1658, in _raise_on_head_call_error
    raise head_call_error
  File "$PY/huggingface_hub/file_download.py", line 1546, in _get_metadata_or_catch_error
    metadata = get_hf_file_metadata(
               ^^^^^^^^^^^^^^^^^^^^^
  File "$PY/huggingface_hub/file_download.py", line 1483, in get_hf_file_metadata
    hf_raise_for_status(r)
  File "$PY/huggingface_hub/utils/_http.py", line 426, in hf_raise_for_status
    raise _format(GatedRepoError, message, response) from e
huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6923c1e0-1b2f3c4d5e6f708192a3b4c5;0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)

Cannot access gated repo for url https://huggingface.co/$MODEL/resolve/main/config.json.
Access to model $MODEL is restricted. You must have access to it and be authenticated to access it. Please log in.

The above exception was the direct cause of the following exception:

EOF
			api_frames_head
			api_frames_config
			cat <<EOF
  File "$PY/vllm/engine/arg_utils.py", line 1089, in create_engine_config
    (self.model, self.tokenizer,
  File "$PY/vllm/transformers_utils/config.py", line 1034, in maybe_override_with_speculators
    config_dict, _ = PretrainedConfig.get_config_dict(
                     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/transformers/configuration_utils.py", line 662, in get_config_dict
    config_dict, kwargs = cls._get_config_dict(pretrained_model_name_or_path, **kwargs)
                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/transformers/configuration_utils.py", line 721, in _get_config_dict
    resolved_config_file = cached_file(
                           ^^^^^^^^^^^^
  File "$PY/transformers/utils/hub.py", line 322, in cached_file
    file = cached_files(path_or_repo_id=path_or_repo_id, filenames=[filename], **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/transformers/utils/hub.py", line 543, in cached_files
    raise OSError(
OSError: You are trying to access a gated repo.
Make sure to have access to it at https://huggingface.co/$MODEL.
401 Client Error. (Request ID: Root=1-6923c1e0-1b2f3c4d5e6f708192a3b4c5;0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)

Cannot access gated repo for url https://huggingface.co/$MODEL/resolve/main/config.json.
Access to model $MODEL is restricted. You must have access to it and be authenticated to access it. Please log in.
EOF
			;;
		esac
	} | api_prefix >&2
	exit 1
}

STATE=loading

# Failures found while reading the model's config come before the engine.
case $FAIL in
trust-remote-code | unsupported-arch | gated-repo)
	pause "$LOAD"
	fail_config
	;;
esac

info model.py:1510 "Using max model len $MAX_MODEL_LEN"
ec_info core.py:93 "Initializing a V1 LLM engine (v$VERSION) with config: model='$MODEL', speculative_config=None, tokenizer='$MODEL', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, trust_remote_code=$TRUST, dtype=torch.bfloat16, max_seq_len=$MAX_MODEL_LEN, download_dir=None, load_format=auto, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, disable_custom_all_reduce=False, quantization=None, enforce_eager=False, kv_cache_dtype=auto, device_config=cuda, seed=0, served_model_name=$(echo $SERVED | cut -d' ' -f1), enable_prefix_caching=True, chunked_prefill_enabled=True"

if [ "$FAIL" = free-memory ]; then
	pause "$LOAD"
	fail_engine_core
fi

ec_info gpu_model_runner.py:2602 "Starting to load model $MODEL..."
pause "$LOAD"

if [ "$FAIL" = cuda-oom ]; then
	fail_engine_core
fi

ec_info default_loader.py:267 "Loading weights took $LOAD seconds"
ec_info gpu_model_runner.py:2653 "Model loading took 4.1523 GiB and $LOAD seconds"

case $FAIL in
no-cache-blocks)
	ec_info gpu_worker.py:298 "Available KV cache memory: -0.42 GiB"
	fail_engine_core
	;;
max-seq-len)
	ec_info gpu_worker.py:298 "Available KV cache memory: 1.20 GiB"
	fail_engine_core
	;;
esac

ec_info gpu_worker.py:298 "Available KV cache memory: 5.21 GiB"
ec_info kv_cache_utils.py:1087 "GPU KV cache size: 97,552 tokens"
ec_info kv_cache_utils.py:1091 "Maximum concurrency for $MAX_MODEL_LEN tokens per request: 23.82x"

if [ -n "$HANG" ] && [ "$HANG" != 0 ]; then
	# Stuck in CUDA graph capture: alive, never listening.
	ec_info gpu_model_runner.py:3480 "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 0%"
	while :; do pause 3600; done
fi

ec_info gpu_model_runner.py:3480 "Graph capturing finished in 0 secs, took 0.00 GiB"
ec_info core.py:210 "init engine (profile, create kv cache, warmup model) took $LOAD seconds"
info loggers.py:147 "Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: 6097"
info api_server.py:1634 "Supported_tasks: ['generate']"
info api_server.py:1912 "Starting vLLM API server 0 on http://$URL_HOST:$PORT"
info launcher.py:34 "Available routes are:"
info launcher.py:42 "Route: /health, Methods: GET"
info launcher.py:42 "Route: /version, Methods: GET"
info launcher.py:42 "Route: /v1/models, Methods: GET"
info launcher.py:42 "Route: /v1/chat/completions, Methods: POST"
info launcher.py:42 "Route: /v1/completions, Methods: POST"

STATE=serving
# busybox httpd takes POST only through CGI under /cgi-bin/, so every connection goes to
# http.sh (GET /health, /version, /v1/models; POST /v1/chat/completions, /v1/completions).
# `nc -ll` binds every address of the container: --host is accepted and only echoed.
# Its listen backlog is the number of -l flags (-ll: 2, which drops connections under load),
# and more than one -l keeps it listening, a process per connection: -lll...l, 128 of them.
export STANDIN_WWW="$WWW" STANDIN_SERVED="$SERVED"
LISTEN_FLAGS=-l
while [ ${#LISTEN_FLAGS} -le 128 ]; do LISTEN_FLAGS=${LISTEN_FLAGS}l; done
nc "$LISTEN_FLAGS" -p "$PORT" -e /standin-http.sh &
CHILD=$!
echo "(APIServer pid=$API_PID) INFO:     Started server process [$API_PID]"
echo "(APIServer pid=$API_PID) INFO:     Waiting for application startup."
echo "(APIServer pid=$API_PID) INFO:     Application startup complete."
wait_child "$CHILD"

# The server ended by itself (e.g. the port was taken).
api ERROR launcher.py:99 "HTTP server exited; shutting down."
echo "(APIServer pid=$API_PID) OSError: [Errno 98] error while attempting to bind on address ('$LISTEN_HOST', $PORT): address already in use" >&2
exit 1
