# Body of the boot script dlvm gives A3 and A4 nodes (startup-script metadata, run as root at
# every boot). The header above it sets GPU_STACK (tcpx, tcpxo or gib), the pinned versions
# and downloads (X_IMAGE or X_URL, with X_EXPECTED: the digest or fingerprints dlvm records),
# the plugin's folders (LIB_DIR, and UDS_PATH for TCPX or ENV_PROFILE for gIB), the interfaces
# to expect (INTERFACES) and NCCL's settings (DLVM_NCCL_SETTINGS, NAME=VALUE lines).
#
# NCCL's settings go to /etc/nccl.conf, which NCCL reads in every process whatever started it
# (a variable in the environment wins), and only once the plugin is installed and running:
# without it, NCCL_NET naming the plugin would make NCCL fail instead of using plain sockets.
#
# It leaves its verdict in STATE_DIR: `ready` (what was installed) or `failed` (the step that
# failed); the log is the startup script's (journalctl -u google-startup-scripts).
set -euo pipefail

# The system's places; the environment may move them (the tests run the script in a folder).
STATE_DIR=${STATE_DIR:-/var/lib/dlvm-gpu-network}
DLVM_NCCL_CONF=${DLVM_NCCL_CONF:-/etc/nccl.conf}
APERTURE_DIR=${APERTURE_DIR:-/dev/aperture_devices}
SYS_NET_DIR=${SYS_NET_DIR:-/sys/class/net}
APT_DIR=${APT_DIR:-/etc/apt}
KEYRING_DIR=${KEYRING_DIR:-/usr/share/keyrings}
readonly RXDM_CONTAINER=dlvm-rxdm
# The file's first line (no '=', so NCCL skips it): how a later boot knows the file is dlvm's.
readonly CONF_MARK="# Written by dlvm's GPU network setup."
# How long the NVIDIA driver may take to appear: Deep Learning VM images install it on the
# first boot, at the same time as this script runs.
readonly DRIVER_WAIT_SECONDS=1800

step=start
log() { echo "dlvm-gpu-network: $*"; }
on_exit() {
	local status=$?
	if [[ ${status} -ne 0 ]]; then
		printf '%s\n' "${step}" >"${STATE_DIR}/failed"
		log "failed at step '${step}' (exit ${status})"
	fi
}
trap on_exit EXIT

wait_for_driver() {
	step="wait for the NVIDIA driver"
	local waited=0
	until nvidia-smi -L >/dev/null 2>&1; do
		if ((waited >= DRIVER_WAIT_SECONDS)); then
			log "no NVIDIA driver after ${DRIVER_WAIT_SECONDS}s"
			return 1
		fi
		sleep 10
		waited=$((waited + 10))
	done
}

require_docker() {
	step="check docker and the NVIDIA container toolkit"
	command -v docker >/dev/null || { log "docker is not installed"; return 1; }
	command -v nvidia-container-cli >/dev/null || {
		log "the NVIDIA container toolkit is not installed (docker --gpus needs it)"
		return 1
	}
}

check_interfaces() {
	local nic
	for nic in ${INTERFACES}; do
		step="find network interface ${nic}"
		[[ -e ${SYS_NET_DIR}/${nic} ]] || { log "no interface ${nic} on this node"; return 1; }
	done
}

# dlvm's settings, then those of the plugin's own profile script (if any) that dlvm does not
# set; NCCL takes the first line of a name.
write_nccl_conf() {
	local profile=${1:-}
	step="write ${DLVM_NCCL_CONF}"
	{
		echo "${CONF_MARK}"
		printf '%s' "${DLVM_NCCL_SETTINGS}"
		if [[ -n ${profile} ]]; then
			[[ -r ${profile} ]] || { log "${profile} is missing"; return 1; }
			local ours line
			ours=$(printf '%s' "${DLVM_NCCL_SETTINGS}" | cut -d= -f1)
			(
				set +eu
				# Only what the profile sets: none of NCCL's variables from elsewhere.
				for name in $(compgen -v NCCL_); do unset "${name}"; done
				# shellcheck disable=SC1090
				NCCL_LIB_DIR=${LIB_DIR} . "${profile}" >/dev/null
				env | grep '^NCCL_' | grep -v '^NCCL_LIB_DIR='
			) | while IFS= read -r line; do
				grep -qxF -- "${line%%=*}" <<<"${ours}" || printf '%s\n' "${line}"
			done
		fi
	} >"${DLVM_NCCL_CONF}.dlvm"
	mv "${DLVM_NCCL_CONF}.dlvm" "${DLVM_NCCL_CONF}"
}

# A settings file of an earlier boot names a plugin that may not come up this time.
remove_old_nccl_conf() {
	if [[ -f ${DLVM_NCCL_CONF} ]] && [[ $(head -n 1 "${DLVM_NCCL_CONF}") == "${CONF_MARK}" ]]; then
		rm -f "${DLVM_NCCL_CONF}"
	fi
}

# What the first download of SOURCE gave on this node (root's STATE_DIR).
first_seen() { printf '%s' "${STATE_DIR}/first-$(printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_')"; }

# Stops unless GOT is EXPECTED (dlvm's record, else this node's first download of SOURCE,
# which GOT becomes when there is neither).
check_download() {
	local source=$1 expected=$2 got=$3 record
	record=$(first_seen "${source}")
	[[ -n ${expected} ]] || expected=$(cat "${record}" 2>/dev/null || true)
	if [[ -n ${expected} && ${got} != "${expected}" ]]; then
		log "${source}: expected ${expected}, got ${got}" >&2
		return 1
	fi
	[[ -s ${record} ]] || printf '%s\n' "${got}" >"${record}"
}

# Pulls IMAGE (repository:tag), checks its digest and prints repository@digest: what runs.
# Run inside $(...), where errexit does not hold: every step returns on failure.
pinned_image() {
	local image=$1 expected=$2 repository=${1%:*} digest="" line
	docker pull --quiet "${image}" >/dev/null || return 1
	while read -r line; do
		if [[ ${line} == "${repository}@"* ]]; then digest=${line#*@}; fi
	done < <(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "${image}")
	[[ -n ${digest} ]] || { log "${image}: no digest after the pull" >&2; return 1; }
	check_download "${image}" "${expected}" "${digest}" || return 1
	printf '%s@%s\n' "${repository}" "${digest}"
}

# Fetches the apt signing key at URL into the keyring KEYRING, checked by its fingerprints.
pinned_apt_key() {
	local url=$1 expected=$2 keyring=$3 got
	curl --fail --silent --show-error --location "${url}" | gpg --dearmor --yes -o "${keyring}.new"
	got=$(gpg --show-keys --with-colons "${keyring}.new" | awk -F: '$1 == "fpr" { print $10 }' |
		sort | tr '\n' ' ')
	check_download "${url}" "${expected}" "${got% }"
	mv "${keyring}.new" "${keyring}"
}

start_rxdm() {
	step="start the receive-data-path manager"
	docker rm --force "${RXDM_CONTAINER}" >/dev/null 2>&1 || true
	docker run --detach --name "${RXDM_CONTAINER}" --restart unless-stopped \
		--network host --privileged --cap-add NET_ADMIN --gpus all \
		"$@"
}

wait_for_rxdm() {
	local ready_line=$1 tries=0
	step="wait for the receive-data-path manager"
	until docker logs "${RXDM_CONTAINER}" 2>&1 | grep -q -- "${ready_line}"; do
		if [[ $(docker inspect --format '{{.State.Running}}' "${RXDM_CONTAINER}") != true ]]; then
			docker logs --tail 20 "${RXDM_CONTAINER}" || true
			return 1
		fi
		((tries += 1))
		if ((tries > 90)); then
			docker logs --tail 20 "${RXDM_CONTAINER}" || true
			return 1
		fi
		sleep 2
	done
}

setup_tcpx() {
	step="pull and check the pinned images"
	local plugin rxdm
	plugin=$(pinned_image "${PLUGIN_IMAGE}" "${PLUGIN_EXPECTED}")
	rxdm=$(pinned_image "${RXDM_IMAGE}" "${RXDM_EXPECTED}")
	step="install the GPUDirect-TCPX NCCL plugin"
	docker run --rm --network host --volume /var/lib:/var/lib "${plugin}" install
	mkdir -p "${UDS_PATH}"
	start_rxdm --volume "${UDS_PATH}:${UDS_PATH}" \
		--entrypoint /tcpgpudmarxd/build/app/tcpgpudmarxd \
		"${rxdm}" \
		--gpu_nic_preset a3vm --gpu_shmem_type fd --uds_path "${UDS_PATH}" \
		--setup_param "--verbose 128 2 0"
	# This RxDM release logs nothing when ready: running after a few seconds is the test.
	sleep 10
	step="check the receive-data-path manager"
	[[ $(docker inspect --format '{{.State.Running}}' "${RXDM_CONTAINER}") == true ]]
}

# The GPU NICs' PCIe apertures, which the TCPXO plugin maps through /dev/aperture_devices.
expose_apertures() {
	step="expose the NICs' PCIe apertures"
	local bdf target
	mkdir -p "${APERTURE_DIR}"
	while read -r bdf _; do
		target=${APERTURE_DIR}/${bdf}
		mkdir -p "${target}"
		mountpoint -q "${target}" || mount --bind "$(readlink -f "/sys/bus/pci/devices/${bdf}")" "${target}"
	done < <(lspci -nn -D | grep '1ae0:0084')
	chmod -R a+r "${APERTURE_DIR}"
}

setup_tcpxo() {
	step="load the dmabuf import helper"
	modprobe import-helper
	expose_apertures
	step="pull and check the pinned images"
	local plugin rxdm
	plugin=$(pinned_image "${PLUGIN_IMAGE}" "${PLUGIN_EXPECTED}")
	rxdm=$(pinned_image "${RXDM_IMAGE}" "${RXDM_EXPECTED}")
	step="install the GPUDirect-TCPXO NCCL plugin"
	rm -rf "${LIB_DIR}"
	docker run --rm --network host --volume /var/lib:/var/lib "${plugin}" install --install-nccl
	start_rxdm --volume /dev/dmabuf_import_helper:/dev/dmabuf_import_helper \
		--env LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu \
		"${rxdm}" --num_hops=2 --num_nics=8 --uid= --alsologtostderr
	wait_for_rxdm "Buffer manager initialization complete"
}

setup_gib() {
	step="install the gIB NCCL plugin ${GIB_VERSION}"
	local installed
	installed=$(dpkg-query --showformat '${Version}' --show nccl-gib 2>/dev/null || true)
	if [[ ${installed} != "${GIB_VERSION}" ]]; then
		local keyring=${KEYRING_DIR}/dlvm-google-artifact-registry.gpg
		pinned_apt_key "${AR_KEY_URL}" "${AR_KEY_EXPECTED}" "${keyring}"
		local google_keyring=${KEYRING_DIR}/dlvm-google-cloud.gpg
		pinned_apt_key "${CLOUD_KEY_URL}" "${CLOUD_KEY_EXPECTED}" "${google_keyring}"
		echo "deb [signed-by=${google_keyring}] https://packages.cloud.google.com/apt apt-transport-artifact-registry-stable main" \
			>"${APT_DIR}/sources.list.d/dlvm-artifact-registry-transport.list"
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install --yes apt-transport-artifact-registry
		echo "deb [signed-by=${keyring}] ar+https://us-apt.pkg.dev/projects/gce-ai-infra gpudirect-gib-apt main" \
			>"${APT_DIR}/sources.list.d/dlvm-nccl-gib.list"
		apt-get update
		apt-mark unhold nccl-gib >/dev/null 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install --yes --allow-downgrades "nccl-gib=${GIB_VERSION}"
		# Held: an unattended upgrade must not move it away from the version dlvm pins.
		apt-mark hold nccl-gib
	fi
}

main() {
	mkdir -p "${STATE_DIR}"
	rm -f "${STATE_DIR}/ready" "${STATE_DIR}/failed"
	remove_old_nccl_conf
	check_interfaces
	wait_for_driver
	case "${GPU_STACK}" in
	tcpx)
		require_docker
		setup_tcpx
		write_nccl_conf
		;;
	tcpxo)
		require_docker
		setup_tcpxo
		write_nccl_conf "${LIB_DIR}/nccl-env-profile.sh"
		;;
	gib)
		setup_gib
		write_nccl_conf "${ENV_PROFILE}"
		;;
	*)
		step="choose the plugin"
		log "unknown GPU_STACK '${GPU_STACK}'"
		return 1
		;;
	esac
	step=done
	printf '%s %s\n' "${GPU_STACK}" "${PLUGIN_IMAGE:-nccl-gib=${GIB_VERSION:-}}" >"${STATE_DIR}/ready"
	log "ready (${GPU_STACK})"
}

main "$@"
