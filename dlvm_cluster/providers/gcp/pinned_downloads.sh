# Checks of what dlvm's node scripts download as root, before it is used (bash; sourced by the
# GPU network boot script and the gcsfuse install). Each download is named in PINS
# (providers/gcp/gpu_network.py) with dlvm's record of it; where dlvm records none, the node
# keeps what its first download gave in PIN_DIR and refuses anything else afterwards. Every
# step returns non-zero on failure, so the functions also stop a caller without errexit.

pin_log() { echo "dlvm-downloads: $*" >&2; }

# What the first download of SOURCE gave on this node.
first_seen() { printf '%s' "${PIN_DIR}/first-$(printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_')"; }

# Fails unless GOT is EXPECTED (dlvm's record, else this node's first download of SOURCE,
# which GOT becomes when there is neither), naming both.
check_download() {
	local source=$1 expected=$2 got=$3 record
	mkdir -p "${PIN_DIR}" || return 1
	record=$(first_seen "${source}")
	[[ -n ${expected} ]] || expected=$(cat "${record}" 2>/dev/null || true)
	if [[ -n ${expected} && ${got} != "${expected}" ]]; then
		pin_log "${source}: expected ${expected}, got ${got}"
		return 1
	fi
	[[ -s ${record} ]] || printf '%s\n' "${got}" >"${record}"
}

# Pulls IMAGE (repository:tag), checks its digest and prints repository@digest: what runs.
pinned_image() {
	local image=$1 expected=$2 repository=${1%:*} digest="" line
	docker pull --quiet "${image}" >/dev/null || return 1
	while read -r line; do
		if [[ ${line} == "${repository}@"* ]]; then digest=${line#*@}; fi
	done < <(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "${image}")
	[[ -n ${digest} ]] || { pin_log "${image}: no digest after the pull"; return 1; }
	check_download "${image}" "${expected}" "${digest}" || return 1
	printf '%s@%s\n' "${repository}" "${digest}"
}

# Fetches the apt signing keys at URL into the keyring KEYRING, checked before apt may trust
# them: the fingerprints of the file's primary keys, sorted, are the expected ones (what
# publishers give; a subkey is bound to its primary key by that key's own signature, which
# GnuPG checks), so that a key added to the file, or one put in its place, is refused.
pinned_apt_key() {
	local url=$1 expected=$2 keyring=$3 got
	curl --fail --silent --show-error --location "${url}" | gpg --dearmor --yes -o "${keyring}.new" ||
		return 1
	got=$(gpg --show-keys --with-colons "${keyring}.new" |
		awk -F: '$1 == "pub" { primary = 1 } $1 == "fpr" && primary { print $10; primary = 0 }' |
		sort | tr '\n' ' ') || return 1
	if [[ -z ${got} ]]; then
		pin_log "${url}: no key in the download"
		rm -f "${keyring}.new"
		return 1
	fi
	check_download "${url}" "${expected}" "${got% }" || { rm -f "${keyring}.new"; return 1; }
	mv "${keyring}.new" "${keyring}"
}

# Installs the apt package SPEC (NAME or NAME=VERSION; apt's candidate when no version) once
# the SHA-256 of its file, as apt's signed index lists it (apt checks the file against it),
# is the one expected: dlvm's record, else this node's first install of that version.
pinned_apt_package() {
	local spec=$1 expected=$2 name=${1%%=*} fields version got
	fields=$(apt-cache show --no-all-versions "${spec}") || {
		pin_log "${spec}: not in apt's sources"
		return 1
	}
	version=$(awk '$1 == "Version:" { print $2; exit }' <<<"${fields}")
	got=sha256:$(awk '$1 == "SHA256:" { print $2; exit }' <<<"${fields}")
	[[ -n ${version} && ${got} != sha256: ]] || { pin_log "${spec}: apt lists no file hash"; return 1; }
	check_download "${name}=${version}" "${expected}" "${got}" || return 1
	DEBIAN_FRONTEND=noninteractive apt-get install --yes --allow-downgrades "${name}=${version}"
}
