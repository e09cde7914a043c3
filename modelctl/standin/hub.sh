# The stand-in's Hugging Face cache (sourced by standin.sh). Not huggingface_hub.
#
# A model's "weights" are written in the layout huggingface_hub uses (HF_HUB_CACHE, else
# HF_HOME/hub, else /root/.cache/huggingface/hub): models--ORG--NAME/blobs/<sha256>,
# snapshots/<commit>/model.safetensors -> ../../blobs/<sha256>, refs/<revision> = <commit>, with
# the blob written as <sha256>.incomplete while it "downloads". modelctl's host-side check
# (modelctl/fetch_script.py, missing_reason) reads the same files.
#
#   hub_download REPO REVISION SECONDS PREFIX   download (SECONDS, a progress line every 0.5 s)
#   hub_fetch_main check|fetch REPO[@REV]...    what modelctl's throwaway fetch container runs
#                                               (`python3 -c <script> MODE REPO...`): the same
#                                               exit codes and lines as modelctl/fetch_script.py
# Environment: STANDIN_DOWNLOAD_SECONDS (default 0: the download is instant), STANDIN_FAIL
# (gated-repo, repo-not-found: huggingface_hub's error, exit 1), HF_HUB_OFFLINE.

HUB=${HF_HUB_CACHE:-${HF_HOME:-/root/.cache/huggingface}/hub}
DOWNLOAD=${STANDIN_DOWNLOAD_SECONDS:-0}
case $DOWNLOAD in
'' | *[!0-9.]* | *.*.*) DOWNLOAD=0 ;;
esac

hub_dir() { r=$1; echo "$HUB/models--${r//\//--}"; }
hub_commit() { # REPO REVISION: the commit a revision names (a 40-hex revision is one)
	case $2 in
	[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*)
		[ ${#2} = 40 ] && { echo "$2"; return; } ;;
	esac
	printf '%s@%s' "$1" "${2:-main}" | sha1sum | cut -c1-40
}

# Prints why REPO is not complete in the cache, or nothing (complete).
hub_missing() { # REPO REVISION
	d=$(hub_dir "$1")
	[ -d "$d" ] || { echo "$1 is not in the cache"; return; }
	for f in "$d"/blobs/*.incomplete; do
		[ -e "$f" ] && { echo "a download of $1 did not finish"; return; }
	done
	c=$(hub_commit "$1" "$2")
	[ -e "$d/snapshots/$c/model.safetensors" ] || echo "$1 has no weights in the cache"
}

hub_download() { # REPO REVISION SECONDS PREFIX
	repo=$1 rev=$2 secs=$3 prefix=$4
	d=$(hub_dir "$repo")
	c=$(hub_commit "$repo" "$rev")
	blob=$(printf '%s weights' "$repo" | sha256sum | cut -c1-64)
	mkdir -p "$d/blobs" "$d/refs" "$d/snapshots/$c" || return 1
	: >"$d/blobs/$blob.incomplete"
	steps=$(awk -v s="$secs" 'BEGIN { n = int(s / 0.5); print (n < 1 ? 1 : n) }')
	step_s=$(awk -v s="$secs" -v n="$steps" 'BEGIN { printf "%.3f", s / n }')
	i=0
	while [ "$i" -lt "$steps" ]; do
		[ "$secs" = 0 ] || ${HUB_SLEEP:-sleep} "$step_s" # standin.sh: pause (SIGTERM ends it)
		i=$((i + 1))
		echo "weights of $repo, $i of $steps parts" >>"$d/blobs/$blob.incomplete"
		[ -n "$prefix" ] && echo "$prefix $(awk -v i="$i" -v n="$steps" 'BEGIN { printf "%.2f of 4.00 GiB (%d%%)", 4 * i / n, 100 * i / n }')"
	done
	mv "$d/blobs/$blob.incomplete" "$d/blobs/$blob"
	echo '{"architectures": ["StandinForCausalLM"]}' >"$d/blobs/config-$c"
	ln -sf "../../blobs/$blob" "$d/snapshots/$c/model.safetensors"
	ln -sf "../../blobs/config-$c" "$d/snapshots/$c/config.json"
	case $c in "$rev") ;; *) printf '%s' "$c" >"$d/refs/${rev:-main}" ;; esac
}

hub_fetch_main() { # check|fetch REPO[@REVISION]...
	mode=$1
	shift
	case $mode in check | fetch) ;; *)
		echo "usage: check|fetch REPO[@REVISION]..." >&2
		return 2
		;;
	esac
	trap 'exit 143' TERM
	for target in "$@"; do
		repo=${target%%@*}
		rev=
		case $target in *@*) rev=${target#*@} ;; esac
		why=$(hub_missing "$repo" "$rev")
		if [ -z "$why" ]; then
			echo "fetch $repo: in the cache"
			continue
		fi
		if [ "$mode" = check ]; then
			echo "$why"
			return 3
		fi
		case ${STANDIN_FAIL:-} in
		gated-repo | repo-not-found)
			hub_error "$repo" >&2
			return 1
			;;
		esac
		echo "fetch $repo: 3 files, 4.00 GiB to check or download"
		hub_download "$repo" "$rev" "$DOWNLOAD" "fetch $repo:" || return 1
		echo "fetch $repo: done in $DOWNLOAD s"
	done
	return 0
}

hub_error() { # huggingface_hub's error for STANDIN_FAIL, as snapshot_download raises it
	echo "Traceback (most recent call last):"
	echo '  File "<string>", line 1, in <module>'
	echo '  File "/usr/local/lib/python3.12/dist-packages/huggingface_hub/hf_api.py", line 2660, in model_info'
	echo '    hf_raise_for_status(r)'
	if [ "$STANDIN_FAIL" = gated-repo ]; then
		echo "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-68b0c2a1-5d2c4e7f1a2b3c4d5e6f7a8b)"
		echo
		echo "Cannot access gated repo for url https://huggingface.co/api/models/$1/revision/main."
		echo "Access to model $1 is restricted. You must have access to it and be authenticated to access it. Please log in."
	else
		echo "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-68b0c2a1-0a1b2c3d4e5f60718293a4b5)"
		echo
		echo "Repository Not Found for url: https://huggingface.co/api/models/$1/revision/main."
		echo "Please make sure you specified the correct \`repo_id\` and \`repo_type\`."
		echo "If you are trying to access a private or gated repo, make sure you are authenticated."
	fi
}
