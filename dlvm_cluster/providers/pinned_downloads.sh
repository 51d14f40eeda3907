# Checks of what dlvm's node scripts download as root, before it is used (bash; sourced by the
# GCP GPU network boot script, the gcsfuse install and the Mountpoint for Amazon S3 install).
# Each download is recorded as a `Pinned` entry (providers/pinned.py) in its provider's
# table; where dlvm records none for an image, key or package, the node keeps what its first
# download gave in PIN_DIR and refuses anything else afterwards. Every step returns non-zero
# on failure, so the functions also stop a caller without errexit.

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

# The fingerprints of the primary keys in the OpenPGP key file FILE, sorted, space-separated:
# what publishers give (a subkey is bound to its primary key by that key's own signature,
# which GnuPG checks).
primary_fingerprints() {
	local listed
	listed=$(gpg --show-keys --with-colons "$1" |
		awk -F: '$1 == "pub" { primary = 1 } $1 == "fpr" && primary { print $10; primary = 0 }' |
		sort | tr '\n' ' ') || return 1
	printf '%s' "${listed% }"
}

# Fails unless the key file at SOURCE, whose primary fingerprints are GOT, holds at least one
# key and only keys among EXPECTED (those its publisher lists, space-separated), naming both:
# a publisher may ship any of its keys, or several at once, while a key added to the file, or
# one put in its place, is refused.
keys_among() {
	local source=$1 expected=$2 got=$3 key
	for key in ${got:-none}; do
		if [[ " ${expected} " != *" ${key} "* ]]; then
			pin_log "${source}: expected keys among ${expected}, got ${got:-no key}"
			return 1
		fi
	done
}

# Fetches the apt signing keys at URL into the keyring KEYRING, checked before apt may trust
# them: every primary key of the file is one of EXPECTED (keys_among); where dlvm records no
# key, the file's keys are this node's first download's, exactly.
pinned_apt_key() {
	local url=$1 expected=$2 keyring=$3 got
	curl --fail --silent --show-error --location "${url}" | gpg --dearmor --yes -o "${keyring}.new" ||
		return 1
	got=$(primary_fingerprints "${keyring}.new") || return 1
	if [[ -z ${got} ]]; then
		pin_log "${url}: no key in the download"
		rm -f "${keyring}.new"
		return 1
	fi
	if [[ -n ${expected} ]]; then
		keys_among "${url}" "${expected}" "${got}" || { rm -f "${keyring}.new"; return 1; }
	else
		check_download "${url}" "" "${got}" || { rm -f "${keyring}.new"; return 1; }
	fi
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

# Downloads the file at URL to FILE once its publisher's detached signature of it, at URL.asc,
# is checked: the key file at KEYS_URL must hold only keys among EXPECTED (keys_among: the
# publisher's documented keys, space-separated; never empty), and gpgv,
# given those keys alone, must find the signature good and made by one of them (a subkey's
# signature counts for its primary key). A signature missing, bad or by another key, or a
# key file holding another key, stops before FILE exists, naming what was expected and what
# came. Runs in a subshell with a GnuPG home of its own, removed at the end.
pinned_signed_file() (
	url=$1 keys_url=$2 expected=$3 file=$4
	[[ -n ${expected} ]] || { pin_log "${url}: no key recorded to check its signature with"; exit 1; }
	work=$(mktemp -d) || exit 1
	export GNUPGHOME=${work}/gnupg
	trap 'gpgconf --kill all >/dev/null 2>&1; rm -rf "${work}"' EXIT
	mkdir -m 700 "${GNUPGHOME}" || exit 1
	fetch() { curl --fail --silent --show-error --location -o "$2" "$1"; }
	fetch "${url}" "${work}/file" || exit 1
	if ! fetch "${url}.asc" "${work}/file.asc"; then
		pin_log "${url}: expected a signature by one of ${expected} at ${url}.asc, got none"
		exit 1
	fi
	fetch "${keys_url}" "${work}/keys" || exit 1
	gpg --dearmor --yes -o "${work}/keyring.gpg" <"${work}/keys" || exit 1
	got=$(primary_fingerprints "${work}/keyring.gpg") || exit 1
	keys_among "${keys_url}" "${expected}" "${got}" || exit 1
	verified=0
	status=$(gpgv --status-fd 1 --keyring "${work}/keyring.gpg" "${work}/file.asc" "${work}/file" \
		2>/dev/null) || verified=$?
	# VALIDSIG's last field is the signing key's primary key; a failed check names its status.
	signer=$(awk '$2 == "VALIDSIG" { print $12 }' <<<"${status}")
	if [[ ${verified} -ne 0 || -z ${signer} || " ${expected} " != *" ${signer} "* ]]; then
		verdict=$(awk '$2 ~ /^(BADSIG|ERRSIG|EXPSIG|EXPKEYSIG|REVKEYSIG|NODATA|NO_PUBKEY|VALIDSIG)$/ {
			print $2, ($2 == "VALIDSIG" ? $12 : $3) }' <<<"${status}" | sort -u | tr '\n' ' ')
		verdict=${verdict% }
		pin_log "${url}: expected a good signature by one of ${expected}, got ${verdict:-no signature}"
		exit 1
	fi
	mv "${work}/file" "${file}"
)
