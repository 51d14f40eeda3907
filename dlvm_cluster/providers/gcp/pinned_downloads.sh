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

# Fetches the apt signing key at URL into the keyring KEYRING, checked by its fingerprints
# before apt may trust it.
pinned_apt_key() {
	local url=$1 expected=$2 keyring=$3 got
	curl --fail --silent --show-error --location "${url}" | gpg --dearmor --yes -o "${keyring}.new" ||
		return 1
	got=$(gpg --show-keys --with-colons "${keyring}.new" | awk -F: '$1 == "fpr" { print $10 }' |
		sort | tr '\n' ' ') || return 1
	check_download "${url}" "${expected}" "${got% }" || { rm -f "${keyring}.new"; return 1; }
	mv "${keyring}.new" "${keyring}"
}

# Installs the apt package SPEC (NAME or NAME=VERSION; apt's candidate when no version) once
# the SHA-256 of its file, as apt's signed index lists it (apt checks the file against it),
# is the one expected: dlvm's record, else this node's first install of that version.
pinned_apt_package() {
	local chosen
	chosen=$(checked_apt_candidate "$1" "$2") || return 1
	DEBIAN_FRONTEND=noninteractive apt-get install --yes --allow-downgrades "${chosen}"
}

# Downloads the package file of SPEC into DIR, checked as pinned_apt_package checks it (apt
# checks the file against the index), for a caller that unpacks it rather than installing it.
pinned_apt_download() {
	local chosen
	chosen=$(checked_apt_candidate "$1" "$2") || return 1
	(cd "$3" && apt-get download "${chosen}")
}

# NAME=VERSION of apt's candidate for SPEC, once the file hash its signed index lists is the
# one expected.
checked_apt_candidate() {
	local spec=$1 expected=$2 name=${1%%=*} fields version got
	fields=$(apt-cache show --no-all-versions "${spec}") || {
		pin_log "${spec}: not in apt's sources"
		return 1
	}
	version=$(awk '$1 == "Version:" { print $2; exit }' <<<"${fields}")
	got=sha256:$(awk '$1 == "SHA256:" { print $2; exit }' <<<"${fields}")
	[[ -n ${version} && ${got} != sha256: ]] || { pin_log "${spec}: apt lists no file hash"; return 1; }
	check_download "${name}=${version}" "${expected}" "${got}" || return 1
	printf '%s=%s\n' "${name}" "${version}"
}
