#!/bin/sh
# Stand-in for the vllm/vllm-openai image (busybox sh, runs as PID 1). Not vLLM.
#
# It behaves like one vLLM release's OpenAI server where a supervisor cares:
#   - STANDIN_VERSION picks the release (0.33.0 unless the image says otherwise): its log texts
#     (texts-<version>.sh, taken from tests/vllm_corpus/vllm-<version>.yaml) and the flags its
#     `vllm serve` accepts (flags-<version>.txt, generated from vLLM's source by
#     scripts/vllm-flags.py). An unknown or ambiguous flag, a missing value, a bad --port,
#     --max-model-len or --dtype exit 2 with argparse's usage and error lines, before anything
#     else; argparse's unambiguous prefixes and `_` spellings are accepted, as in vLLM;
#   - the command line: an optional leading `vllm serve` (the image's entrypoint) or
#     `python3 -m vllm.entrypoints.openai.api_server` (0.11.1's entrypoint, which ignores a
#     positional model), then a positional model or `--model X` (deprecated under `vllm serve`,
#     with vLLM's warning), `--port N` (8000), `--host H`, `--served-model-name NAME...`,
#     `--max-model-len N` (4096), `--gpu-memory-utilization F`, `--trust-remote-code`,
#     `--enforce-eager` (no compile step, no CUDA graphs), `--dtype`; every other known flag is
#     accepted and only echoed in the `non-default args` line;
#   - binds the port right after the `non-default args` line, as vLLM does: a port another
#     process of the container's network namespace listens on fails there, before the load,
#     with `OSError: [Errno 98] Address already in use`;
#   - "loads" for STANDIN_LOAD_SECONDS (connection refused meanwhile), then "compiles": with no
#     marker under $VLLM_CACHE_ROOT/torch_compile_cache/<hash of version, model and flags>/ it
#     waits STANDIN_COMPILE_SECONDS, logs the version's compile lines and writes the marker;
#     with the marker (a kept /root/.cache/vllm) it logs that the graphs were loaded from the
#     cache instead. Then it serves GET /health, /v1/models, /version, POST
#     /v1/chat/completions and /v1/completions (SSE when "stream": true) through busybox nc
#     and http.sh, one connection each;
#   - SIGTERM/SIGINT: stops the server, logs the shutdown, exits 0 at once.
#
# Environment:
#   STANDIN_VERSION         0.33.0 or 0.11.1 (default: the image's STANDIN_DEFAULT_VERSION)
#   STANDIN_LOAD_SECONDS    load time before listening (default 1; fractions ok)
#   STANDIN_COMPILE_SECONDS the torch.compile step when the cache is empty (default 0.2)
#   STANDIN_FAIL=<kind>     print that version's log for the failure and exit 1. Kinds:
#                           free-memory, no-cache-blocks, max-seq-len, cuda-oom,
#                           weights-dont-fit, trust-remote-code, unsupported-arch,
#                           arch-removed, arch-plugin (0.33), gated-repo, repo-not-found
#   STANDIN_ARCH            the architecture named by unsupported-arch / arch-removed / arch-plugin
#   STANDIN_HANG=1          never listen (stuck capturing CUDA graphs); SIGTERM still ends it
#   STANDIN_IGNORE_SIGTERM=1  ignore SIGTERM (docker kills it after the grace)
#   STANDIN_WWW             where the static answers are written (default /www)
#   STANDIN_TOKENS          words per completion (default 8; max_tokens caps it)
#   STANDIN_TOKEN_DELAY     seconds between words, streaming or not (default 0)
#   VLLM_SERVER_DEV_MODE=1  the development endpoints, with --enable-sleep-mode vLLM's sleep mode
#                           (/sleep, /wake_up, /is_sleeping, /collective_rpc, /reset_prefix_cache:
#                           sleep.sh, which documents them and STANDIN_WAKE_SECONDS,
#                           STANDIN_SLEEP_SECONDS and STANDIN_WAKE_FAIL=error|exit)
#   VLLM_CACHE_ROOT         vLLM's cache (default /root/.cache/vllm)
#   VLLM_DISABLE_COMPILE_CACHE=1  compile every time, as vLLM does

DIR=$(dirname "$0")
VERSION=${STANDIN_VERSION:-${STANDIN_DEFAULT_VERSION:-0.33.0}}
KNOWN_VERSIONS=$(cd "$DIR" && ls texts-*.sh | sed 's/^texts-//; s/\.sh$//' | tr '\n' ' ')
if [ ! -f "$DIR/texts-$VERSION.sh" ] || [ ! -f "$DIR/flags-$VERSION.txt" ]; then
	echo "standin: unknown STANDIN_VERSION='$VERSION' (known: $KNOWN_VERSIONS)" >&2
	exit 1
fi
FLAGS=$DIR/flags-$VERSION.txt
LOAD=${STANDIN_LOAD_SECONDS:-1}
COMPILE=${STANDIN_COMPILE_SECONDS:-0.2}
FAIL=${STANDIN_FAIL:-}
HANG=${STANDIN_HANG:-}
IGNORE_TERM=${STANDIN_IGNORE_SIGTERM:-}
WWW=${STANDIN_WWW:-/www}
CACHE_ROOT=${VLLM_CACHE_ROOT:-/root/.cache/vllm}

API_PID=$$
EC_PID=$(( $$ + 200 ))
PY=/usr/local/lib/python3.12/dist-packages
STATE=starting      # starting | loading | serving
CHILD=
TORCH_OOM='torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 11.94 GiB of which 512.00 MiB is free. Including non-PyTorch memory, this process has 11.42 GiB memory in use. Of the allocated memory 10.93 GiB is allocated by PyTorch, and 197.35 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)'

# ------------------------------------------------------------------ helpers
ts() { date '+%m-%d %H:%M:%S'; }
api() { echo "(APIServer pid=$API_PID) $1 $(ts) [$2] $3"; }
info() { api INFO "$1" "$2"; }
ec_info() { echo "($EC_NAME pid=$EC_PID) INFO $(ts) [$1] $2"; }
# What a process writes outside the logger (tracebacks, tqdm bars): prefixed in 0.11, bare in 0.33.
raw_api() { if [ "$RAW_PREFIXED" = 1 ]; then sed "s/^/(APIServer pid=$API_PID) /"; else cat; fi; }
raw_ec() { if [ "$RAW_PREFIXED" = 1 ]; then sed "s/^/($EC_NAME pid=$EC_PID) /"; else cat; fi; }
# logger.exception(): every line carries the record's header.
ec_error_log() { sed "s/^/($EC_NAME pid=$EC_PID) ERROR $(ts) [$L_EC_ERROR] /"; }
pyfloat() { awk -v x="$1" 'BEGIN { v = x + 0; if (v == int(v)) v = v ".0"; print v }'; }
gib2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
fmt_gib() { awk -v x="$1" 'BEGIN { v = sprintf("%.2f", x); sub(/0$/, "", v); sub(/\.$/, ".0", v); print v }'; }
commas() { echo "$1" | sed ':a; s/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }

. "$DIR/texts-$VERSION.sh"
. "$DIR/hub.sh"

# ---------------------------------------------------------------- arguments
FORM=serve          # serve: `vllm serve ...` | module: python3 -m vllm.entrypoints.openai.api_server
case ${1:-} in
vllm)
	shift
	[ "${1:-}" = serve ] && shift
	;;
serve)
	shift
	;;
python | python3 | python3.* | */python | */python3 | */python3.*)
	if [ "${2:-}" = -c ]; then # modelctl's weights fetch: python3 -c SCRIPT check|fetch REPO...
		shift 3 2>/dev/null || set --
		hub_fetch_main "$@"
		exit $?
	fi
	if [ "${2:-}" = -m ]; then shift 3 2>/dev/null || set --; fi
	FORM=module
	;;
esac
if [ "$FORM" = serve ]; then
	SUB_PROG="vllm serve"
	SUB_USAGE="usage: vllm serve [model_tag] [options]"   # cli/serve.py: usage=
	TOP_PROG=vllm
else
	# prog is the script's name; its usage lists every option (shortened here)
	SUB_PROG=api_server.py
	SUB_USAGE="usage: api_server.py [-h] [options] [model_tag]"
	TOP_PROG=api_server.py
	TOP_USAGE=$SUB_USAGE
fi

usage_error() { # an error the serve sub-parser reports (argparse: usage, then "prog: error: ...")
	echo "$SUB_USAGE" >&2
	echo "$SUB_PROG: error: $1" >&2
	exit 2
}

# The flag a command-line word names: exact, or argparse's unambiguous prefix. Prints
# "<flag> <kind>"; nothing when unknown; exits 2 when ambiguous.
lookup() {
	found=$(awk -v f="$1" '$1 == f { print $1, $2; exit }' "$FLAGS")
	if [ -z "$found" ]; then
		found=$(awk -v f="$1" 'substr($1, 1, 1) == "-" && index($1, f) == 1 { print $1, $2 }' "$FLAGS")
		case $found in
		*"
"*)
			usage_error "ambiguous option: $1 could match $(echo "$found" | awk '{ print $1 }' | sed ':a; N; s/\n/, /; ta')"
			;;
		esac
	fi
	[ -n "$found" ] && echo "$found"
	return 0
}

MODEL_TAG=
MODEL_FLAG=
PORT=8000
HOST=
SERVED=
MAXLEN=
GPU_UTIL=$DEFAULT_UTIL
TRUST=False
EAGER=False
DTYPE=torch.bfloat16
BATCHED=8192
SHUTDOWN_TIMEOUT=0
SLEEP_MODE=0
NONDEFAULT=
HASHED=             # the flags that change what torch.compile builds
UNRECOGNIZED=
SEEN_POSITIONAL=

pykey() { k=${1#--}; k=${k#-}; echo "${k//-/_}"; }
add_nondefault() { NONDEFAULT="$NONDEFAULT, '$1': $2"; }
not_a_flag() { # argparse: "-1" or "-" are values, "-x" / "--x" are options
	case $1 in
	-[0-9]* | -) return 0 ;;
	-*) return 1 ;;
	esac
	return 0
}

while [ $# -gt 0 ]; do
	arg=$1
	shift
	if not_a_flag "$arg"; then
		if [ -z "$MODEL_TAG" ] && [ -z "$SEEN_POSITIONAL" ]; then
			MODEL_TAG=$arg
			SEEN_POSITIONAL=1
		else
			UNRECOGNIZED="$UNRECOGNIZED $arg"
		fi
		continue
	fi
	case $arg in
	--*=*) name=${arg%%=*}; val=${arg#*=}; hasval=1 ;;
	*) name=$arg; val=; hasval=0 ;;
	esac
	# vLLM turns _ into - in the name (up to a dot: --compilation-config.mode 3 is JSON)
	base=${name%%.*}
	base=${base//_/-}
	case $name in
	*.*) dotted=1 ;;
	*) dotted= ;;
	esac
	case $base in
	--*) hit=$(lookup "$base") || exit 2 ;; # 2: ambiguous, already reported
	*) hit= ;;   # short options (-tp, -q, -O3) are not in the lists: accepted with their value
	esac
	if [ -z "$hit" ] && [ "${base#--}" != "$base" ]; then
		# argparse collects it, and the word after it (no positional is left to take it)
		UNRECOGNIZED="$UNRECOGNIZED $arg"
		if [ "$hasval" = 0 ] && [ $# -gt 0 ] && not_a_flag "$1"; then
			UNRECOGNIZED="$UNRECOGNIZED $1"
			shift
		fi
		continue
	fi
	flag=${hit%% *}
	kind=${hit#* }
	[ -z "$hit" ] && { flag=$base; kind=value; }
	[ -n "$dotted" ] && kind=value
	vals=
	case $kind in
	switch)
		[ "$hasval" = 1 ] && usage_error "argument $flag: ignored explicit argument '$val'"
		;;
	value)
		if [ "$hasval" = 0 ]; then
			if [ $# -gt 0 ] && not_a_flag "$1"; then
				val=$1
				shift
			else
				usage_error "argument $flag: expected one argument"
			fi
		fi
		;;
	optional)
		if [ "$hasval" = 0 ] && [ $# -gt 0 ] && not_a_flag "$1"; then
			val=$1
			shift
		fi
		;;
	list)
		if [ "$hasval" = 1 ]; then
			vals=$val
		else
			while [ $# -gt 0 ] && not_a_flag "$1"; do
				vals="$vals
$1"
				shift
			done
			vals=${vals#?}
			[ -n "$vals" ] || usage_error "argument $flag: expected at least one argument"
		fi
		val=$vals
		;;
	esac
	case $flag in
	--port | --host | --served-model-name) ;;
	*) HASHED="$HASHED $flag=$val" ;;
	esac
	case $flag in
	--help)
		echo "$SUB_USAGE"
		exit 0
		;;
	--model)
		MODEL_FLAG=$val
		;;
	--port)
		case $val in
		'' | *[!0-9]*) usage_error "argument --port: invalid int value: '$val'" ;;
		esac
		PORT=$val
		add_nondefault port "$val"
		;;
	--host)
		HOST=$val
		;;
	--served-model-name)
		SERVED=$val
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
	--dtype)
		case $val in
		auto | bfloat16) DTYPE=torch.bfloat16 ;;
		float16 | half) DTYPE=torch.float16 ;;
		float | float32) DTYPE=torch.float32 ;;
		*) usage_error "argument --dtype: invalid choice: '$val' (choose from 'auto', 'bfloat16', 'float', 'float16', 'float32', 'half')" ;;
		esac
		add_nondefault dtype "'$val'"
		;;
	--trust-remote-code | --no-trust-remote-code)
		[ "$flag" = --trust-remote-code ] && TRUST=True || TRUST=False
		add_nondefault trust_remote_code "$TRUST"
		;;
	--enforce-eager | --no-enforce-eager)
		[ "$flag" = --enforce-eager ] && EAGER=True || EAGER=False
		add_nondefault enforce_eager "$EAGER"
		;;
	--max-num-batched-tokens)
		case $val in *[!0-9]* | '') ;; *) BATCHED=$val ;; esac
		add_nondefault max_num_batched_tokens "$val"
		;;
	--enable-sleep-mode | --no-enable-sleep-mode)
		[ "$flag" = --enable-sleep-mode ] && SLEEP_MODE=1 || SLEEP_MODE=0
		[ "$SLEEP_MODE" = 1 ] && add_nondefault enable_sleep_mode True || add_nondefault enable_sleep_mode False
		;;
	--shutdown-timeout)
		SHUTDOWN_TIMEOUT=$val
		add_nondefault shutdown_timeout "$val"
		;;
	*)
		case $kind in
		switch)
			case $flag in
			--no-*) add_nondefault "$(pykey "${flag#--no-}")" False ;;
			*) add_nondefault "$(pykey "$flag")" True ;;
			esac
			;;
		list) add_nondefault "$(pykey "$flag")" "[$(echo "$val" | sed "s/.*/'&'/" | sed ':a; N; s/\n/, /; ta')]" ;;
		*)
			case $val in
			'' | *[!0-9.-]* | *.*.* | -) add_nondefault "$(pykey "$flag")" "'$val'" ;;
			*) add_nondefault "$(pykey "$flag")" "$val" ;; # int and float flags print bare
			esac
			;;
		esac
		;;
	esac
done

# `vllm serve` moves --model to the positional slot (utils/argparse_utils.py), with a warning;
# a positional given as well is then left over. The module form of 0.11 ignores a positional.
if [ "$FORM" = serve ] && [ -n "$MODEL_FLAG" ]; then
	echo "WARNING $(ts) [$L_DEPRECATION] $(t_deprecation)" | { [ "$RAW_PREFIXED" = 1 ] && cat || sed "s/^/(MainProcess pid=$API_PID) /"; }
	[ -n "$MODEL_TAG" ] && UNRECOGNIZED="$MODEL_TAG$UNRECOGNIZED"
	MODEL_TAG=$MODEL_FLAG
fi
if [ -n "$UNRECOGNIZED" ]; then
	# the sub-parser hands what it does not know up; the top-level parser reports it
	echo "$TOP_USAGE" >&2
	echo "$TOP_PROG: error: unrecognized arguments: ${UNRECOGNIZED# }" >&2
	exit 2
fi
if [ "$FORM" = module ] && [ "$MODULE_IGNORES_POSITIONAL" = 1 ]; then
	MODEL=${MODEL_FLAG:-Qwen/Qwen3-0.6B}
else
	MODEL=${MODEL_TAG:-${MODEL_FLAG:-Qwen/Qwen3-0.6B}}
fi
[ -n "$SERVED" ] || SERVED=$MODEL
SERVED1=$(echo "$SERVED" | head -n 1)
MAX_MODEL_LEN=${MAXLEN:-4096}
LISTEN_HOST=${HOST:-0.0.0.0}
case $LISTEN_HOST in
*:*) URL_HOST="[$LISTEN_HOST]" ;;
*) URL_HOST=$LISTEN_HOST ;;
esac

# ---------------------------------------------------------------- start-up
case " $KNOWN_FAILS " in
"  " | *" $FAIL "*) ;;
*)
	[ -z "$FAIL" ] || {
		echo "standin: unknown STANDIN_FAIL='$FAIL' for vLLM $VERSION (known: $KNOWN_FAILS)" >&2
		exit 1
	}
	;;
esac
case $LOAD in
'' | *[!0-9.]* | *.*.*)
	api WARNING standin "STANDIN_LOAD_SECONDS='$LOAD' is not a number; using 1"
	LOAD=1
	;;
esac
case $COMPILE in
'' | *[!0-9.]* | *.*.*)
	api WARNING standin "STANDIN_COMPILE_SECONDS='$COMPILE' is not a number; using 0.2"
	COMPILE=0.2
	;;
esac

case ${VLLM_SERVER_DEV_MODE:-0} in 1 | true | True) DEV_MODE=1 ;; *) DEV_MODE=0 ;; esac
# 0.11.1 warns when api_server.py is imported (api_server.py:1045), before anything else.
[ "$DEV_MODE" = 1 ] && [ "$VERSION" = 0.11.1 ] && api WARNING api_server.py:1045 "SECURITY WARNING: Development endpoints are enabled! This should NOT be used in production!"
info "$L_VERSION" "$(t_version)"
{
	printf "{"
	[ -n "$MODEL_TAG" ] && printf "'model_tag': '%s', " "$MODEL_TAG"
	[ -n "$HOST" ] && printf "'host': '%s', " "$HOST"
	printf "'model': '%s'" "$MODEL"
	if [ "$SERVED" != "$MODEL" ]; then
		printf ", 'served_model_name': ["
		sep=
		echo "$SERVED" | while read -r n; do printf "%s'%s'" "$sep" "$n"; sep=", "; done
		printf "]"
	fi
	[ -n "$MAXLEN" ] && printf ", 'max_model_len': %s" "$MAXLEN"
	printf "%s}" "$NONDEFAULT"
} | { read -r args; info "$L_NONDEFAULT" "non-default args: $args"; }

# vLLM binds its socket here, before the engine (it listens only once the engine is up).
port_taken() {
	hex=$(printf '%04X' "$PORT")
	for table in /proc/net/tcp /proc/net/tcp6; do
		[ -r "$table" ] || continue
		# state 0A: LISTEN; local address ends with :PORT
		awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' "$table" && return 0
	done
	return 1
}
if port_taken; then
	{
		cat <<TEXT
Traceback (most recent call last):
  File "/usr/local/bin/vllm", line 10, in <module>
    sys.exit(main())
             ^^^^^^
  File "$PY/vllm/entrypoints/cli/main.py", line 73, in main
    args.dispatch_function(args)
  File "$PY/$BIND_FILE", line $BIND_SETUP_LINE, in setup_server
    sock = create_server_socket(sock_addr)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "$PY/$BIND_FILE", line $BIND_CREATE_LINE, in create_server_socket
    sock.bind(addr)
OSError: [Errno 98] Address already in use
TEXT
	} | raw_api >&2
	exit 1
fi

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
		if [ "$VERSION" != 0.11.1 ]; then
			# launchers/launcher.py:270-276 (drain when --shutdown-timeout > 0)
			mode=abort
			[ "${SHUTDOWN_TIMEOUT:-0}" != 0 ] && mode=drain
			info launcher.py:270 "[shutdown] API server: stopping engine client mode=$mode timeout=${SHUTDOWN_TIMEOUT}s"
		fi
		info "$L_SHUTDOWN" "Shutting down FastAPI HTTP server."
	fi
	[ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null
	if [ "$STATE" = serving ]; then
		echo "(APIServer pid=$API_PID) INFO:     Shutting down"
		echo "(APIServer pid=$API_PID) INFO:     Waiting for application shutdown."
		echo "(APIServer pid=$API_PID) INFO:     Application shutdown complete."
	else
		api INFO standin "Shutting down (SIGTERM received while $STATE)."
	fi
	exit 0
}

if [ -n "$IGNORE_TERM" ] && [ "$IGNORE_TERM" != 0 ]; then
	trap 'api WARNING standin "SIGTERM received and ignored (STANDIN_IGNORE_SIGTERM=1)"' TERM
else
	trap on_term TERM
fi
trap on_term INT
# sleep.sh (STANDIN_WAKE_FAIL=exit): the engine core died waking up; the server goes with it.
on_engine_death() {
	trap '' TERM INT USR1
	[ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null
	api ERROR "$L_SHUTDOWN" "Engine core proc $EC_NAME died unexpectedly, shutting down client."
	exit 1
}
trap on_engine_death USR1

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

# --------------------------------------------------------------- failures
api_traceback_head() {
	cat <<TEXT
Traceback (most recent call last):
  File "/usr/local/bin/vllm", line 10, in <module>
    sys.exit(main())
             ^^^^^^
  File "$PY/vllm/entrypoints/cli/main.py", line 73, in main
    args.dispatch_function(args)
  File "$PY/vllm/entrypoints/cli/serve.py", line 59, in cmd
    uvloop.run(run_server(args))
TEXT
}

fail_engine_core() {
	cause=$(t_cause)
	{
		echo "EngineCore failed to start."
		echo "Traceback (most recent call last):"
		t_engine_frames
		echo "$cause"
	} | ec_error_log
	{
		echo "Process $EC_NAME:"
		echo "Traceback (most recent call last):"
		echo '  File "/usr/lib/python3.12/multiprocessing/process.py", line 314, in _bootstrap'
		echo '    self.run()'
		t_engine_frames
		echo "$cause"
	} | raw_ec >&2
	{
		api_traceback_head
		t_wrapper
	} | raw_api >&2
	exit 1
}

fail_config() {
	t_config_failure | raw_api >&2
	exit 1
}

STATE=loading

# Failures found while reading the model's config come before the engine.
case $FAIL in
trust-remote-code | unsupported-arch | arch-removed | arch-plugin | gated-repo | repo-not-found)
	pause "$LOAD"
	fail_config
	;;
esac

info "$L_MAXLEN" "Using max model len $MAX_MODEL_LEN"
ec_info "$L_ENGINE" "$(t_engine_config)"

if [ "$FAIL" = free-memory ]; then
	pause "$LOAD"
	fail_engine_core
fi

ec_info "$L_START_LOAD" "Starting to load model $MODEL..."
# The weights download (hub.sh): STANDIN_DOWNLOAD_SECONDS when the cache lacks them, none when
# it has them (modelctl's fetch, or an earlier start, put them there).
if [ -n "$(hub_missing "$MODEL" "")" ] && [ "${HF_HUB_OFFLINE:-0}" != 1 ]; then
	HUB_SLEEP=pause hub_download "$MODEL" "" "$DOWNLOAD" ""
	case $DOWNLOAD in 0 | 0.* | .*) ;; *) ec_info weight_utils.py:460 "Time spent downloading weights for $MODEL: $(pyfloat "$DOWNLOAD") seconds" ;; esac
fi
pause "$LOAD"

if [ "$FAIL" = weights-dont-fit ] || { [ "$FAIL" = cuda-oom ] && [ "$CUDA_OOM_AT" = load ]; }; then
	if [ "$FAIL" = weights-dont-fit ] && [ "$CUDA_OOM_AT" = profile ]; then
		echo "($EC_NAME pid=$EC_PID) ERROR $(ts) [gpu_model_runner.py:5086] $(t_weights_dont_fit)"
	fi
	fail_engine_core
fi

ec_info "$L_WEIGHTS" "Loading weights took $LOAD seconds"
ec_info "$L_MODEL_LOADING" "$(t_model_loading "$LOAD")"

# ------------------------------------------------------- torch.compile step
# vLLM keys its compile cache by a hash of the config, the code and the compiler
# (compilation/backends.py); the stand-in by its version, the model and the flags.
COMPILED=0
if [ "$EAGER" != True ]; then
	t_compile_start
	key=$(printf '%s\n' "$VERSION" "$MODEL" "$MAX_MODEL_LEN" "$HASHED" | sha256sum | cut -c1-10)
	local_dir=$CACHE_ROOT/torch_compile_cache/$key/rank_0_0/backbone
	marker=$local_dir/standin-compiled
	if [ "${VLLM_DISABLE_COMPILE_CACHE:-0}" != 0 ]; then
		ec_info "$L_CACHE_DIR" "vLLM's torch.compile cache is disabled."
		marker=
	else
		mkdir -p "$local_dir" 2>/dev/null
		ec_info "$L_CACHE_DIR" "Using cache directory: $local_dir for vLLM's torch.compile"
	fi
	ec_info "$L_DYNAMO" "Dynamo bytecode transform time: 0.05 s"
	if [ -n "$marker" ] && [ -f "$marker" ]; then
		ec_info "$L_COMPILE_CACHED" "$(t_compile_cached 0.010)"
		COMPILED=0.06
	else
		pause "$COMPILE"
		ec_info "$L_COMPILE_GRAPH" "$(t_compile_graph "$(awk -v c="$COMPILE" 'BEGIN { printf "%.2f", c }')")"
		[ -n "$marker" ] && echo "$VERSION $MODEL$HASHED" >"$marker" 2>/dev/null
		COMPILED=$(awk -v c="$COMPILE" 'BEGIN { printf "%.2f", c + 0.05 }')
	fi
	ec_info "$L_COMPILE_TOTAL" "$(t_compile_total "$COMPILED")"
fi

if [ "$FAIL" = cuda-oom ]; then
	fail_engine_core
fi

t_cudagraph_profiling
case $FAIL in
no-cache-blocks)
	ec_info "$L_KV_MEM" "Available KV cache memory: -0.42 GiB"
	fail_engine_core
	;;
max-seq-len)
	ec_info "$L_KV_MEM" "Available KV cache memory: 1.2 GiB"
	fail_engine_core
	;;
esac
ec_info "$L_KV_MEM" "Available KV cache memory: 5.21 GiB"
t_kv_size

if [ -n "$HANG" ] && [ "$HANG" != 0 ]; then
	# Stuck in CUDA graph capture: alive, never listening (a tqdm bar on stderr).
	echo 'Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):   0%|          | 0/67 [00:00<?, ?it/s]' | raw_ec >&2
	while :; do pause 3600; done
fi

[ "$EAGER" = True ] || ec_info "$L_GRAPHS_DONE" "Graph capturing finished in 0 secs, took 0.00 GiB"
ec_info "$L_INIT_ENGINE" "$(t_init_engine "$LOAD" "$COMPILED")"
info "$L_TASKS" "$(t_tasks)"
info "$L_STARTING" "$(t_starting)"
# 0.33.0 warns when it registers the development routes (serve/__init__.py:44).
[ "$DEV_MODE" = 1 ] && [ "$VERSION" != 0.11.1 ] && api WARNING __init__.py:44 "SECURITY WARNING: Development endpoints are enabled! This should NOT be used in production!"
info "$L_ROUTES" "Available routes are:"
DEV_ROUTES=
[ "$DEV_MODE" = 1 ] && DEV_ROUTES="/reset_prefix_cache, Methods: POST|/sleep, Methods: POST|/wake_up, Methods: POST|/is_sleeping, Methods: GET|/collective_rpc, Methods: POST"
OLD_IFS=$IFS
IFS='|'
for route in "/health, Methods: GET" "/version, Methods: GET" "/v1/models, Methods: GET" \
	"/v1/chat/completions, Methods: POST" "/v1/completions, Methods: POST" $DEV_ROUTES; do
	info "$L_ROUTE" "Route: $route"
done
IFS=$OLD_IFS

STATE=serving
# busybox httpd takes POST only through CGI under /cgi-bin/, so every connection goes to
# http.sh (GET /health, /version, /v1/models; POST /v1/chat/completions, /v1/completions).
# `nc -ll` binds every address of the container: --host is accepted and only echoed.
# Its listen backlog is the number of -l flags (-ll: 2, which drops connections under load),
# and more than one -l keeps it listening, a process per connection: -lll...l, 128 of them.
export STANDIN_WWW="$WWW" STANDIN_SERVED="$SERVED"
# sleep.sh's view of the engine (it runs in http.sh, one process per connection).
export STANDIN_RUN_VERSION="$VERSION" STANDIN_SLEEP_MODE="$SLEEP_MODE" STANDIN_API_PID="$API_PID" \
	STANDIN_EC_PID="$EC_PID" STANDIN_EC_NAME="$EC_NAME" STANDIN_GPU_UTIL="$GPU_UTIL"
rm -rf "$WWW/sleep"
LISTEN_FLAGS=-l
while [ ${#LISTEN_FLAGS} -le 128 ]; do LISTEN_FLAGS=${LISTEN_FLAGS}l; done
nc "$LISTEN_FLAGS" -p "$PORT" -e "$DIR/http.sh" &
CHILD=$!
echo "(APIServer pid=$API_PID) INFO:     Started server process [$API_PID]"
echo "(APIServer pid=$API_PID) INFO:     Waiting for application startup."
echo "(APIServer pid=$API_PID) INFO:     Application startup complete."
wait_child "$CHILD"

# The server ended by itself (the port was taken after the bind check: a race).
api ERROR "$L_SHUTDOWN" "HTTP server exited; shutting down."
echo "OSError: [Errno 98] Address already in use" | raw_api >&2
exit 1
