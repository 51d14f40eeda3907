# Body of the boot script dlvm gives A3 and A4 nodes (startup-script metadata, run as root at
# every boot). The header above it sets GPU_STACK (tcpx, tcpxo or gib), the pinned versions
# and downloads (X_IMAGE, X_URL or X_PACKAGE, with X_EXPECTED: the digest, fingerprints or
# file hash dlvm records; pinned_downloads.sh, above this body, checks them),
# the plugin's folders (LIB_DIR, and for TCPX UDS_PATH with the sockets RxDM opens there,
# RXDM_SOCKETS, or ENV_PROFILE for gIB), the interfaces
# to expect (INTERFACES) and NCCL's settings (DLVM_NCCL_SETTINGS, NAME=VALUE lines).
#
# NCCL's settings go to /etc/nccl.conf, which NCCL reads in every process whatever started it
# (a variable in the environment wins), and the plugin's folder to the dynamic linker's search
# path (/etc/ld.so.conf.d, so that whatever LD_LIBRARY_PATH a job has is kept), both only once
# the plugin is installed and running: without it, NCCL_NET naming the plugin would make NCCL
# fail instead of using plain sockets.
#
# It leaves its progress and verdict in STATE_DIR: `step` (the step under way), then `ready`
# (what was installed) or `failed` (the step that failed); the log is the startup script's
# (journalctl -u google-startup-scripts), and `boot` names the boot they belong to. dlvm waits
# for the verdict of every node before a job runs: it sends this script to each node with the
# argument `probe` (print the verdict of this boot) and, when any node failed, `fallback` (run
# as root: this node uses plain NCCL too, so that no job mixes transports).
set -euo pipefail

# The system's places; the environment may move them (the tests run the script in a folder).
STATE_DIR=${STATE_DIR:-/var/lib/dlvm-gpu-network}
DLVM_NCCL_CONF=${DLVM_NCCL_CONF:-/etc/nccl.conf}
APERTURE_DIR=${APERTURE_DIR:-/dev/aperture_devices}
SYS_NET_DIR=${SYS_NET_DIR:-/sys/class/net}
APT_DIR=${APT_DIR:-/etc/apt}
KEYRING_DIR=${KEYRING_DIR:-/usr/share/keyrings}
LD_SO_CONF_DIR=${LD_SO_CONF_DIR:-/etc/ld.so.conf.d}
TOPOLOGY_DIR=${TOPOLOGY_DIR:-/etc/dlvm}
USR_SRC_DIR=${USR_SRC_DIR:-/usr/src}
# Where TCPXO's RxDM leaves its health file once its initialization is complete.
RXDM_HEALTH_DIR=${RXDM_HEALTH_DIR:-/run/dlvm-rxdm}
BOOT_ID_FILE=${BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}
# Where the first download of each pin is kept (pinned_downloads.sh).
PIN_DIR=${PIN_DIR:-${STATE_DIR}}
readonly RXDM_CONTAINER=dlvm-rxdm
# The file's first line (no '=', so NCCL skips it): how a later boot knows the file is dlvm's.
readonly CONF_MARK="# Written by dlvm's GPU network setup."
# The dynamic linker's entry for the plugin's folder (sorted first, as Google's gIB setup does).
readonly LD_SO_CONF_NAME=000_dlvm-nccl-plugin.conf
# How long the NVIDIA driver may take to appear: Deep Learning VM images install it on the
# first boot, at the same time as this script runs.
readonly DRIVER_WAIT_SECONDS=1800

step=start
log() { echo "dlvm-gpu-network: $*"; }
# The step under way, for the log and for dlvm's progress while it waits for the verdict.
begin() {
	step=$1
	printf '%s\n' "${step}" >"${STATE_DIR}/step"
}
# Temporary folders of the steps, removed however the script ends: a failed command stops it
# at once (errexit), before the step's own clean-up. `temp_dir NAME` makes one and sets the
# variable NAME to it (not in a subshell, which would not keep the list).
temp_dirs=()
temp_dir() {
	local made
	made=$(mktemp -d) || return 1
	temp_dirs+=("${made}")
	printf -v "$1" '%s' "${made}"
}
on_exit() {
	local status=$?
	((${#temp_dirs[@]} == 0)) || rm -rf "${temp_dirs[@]}"
	if [[ ${status} -ne 0 ]]; then
		printf '%s\n' "${step}" >"${STATE_DIR}/failed"
		log "failed at step '${step}' (exit ${status})"
		# A check after the settings were written failed: no job may be sent to the plugin.
		remove_old_nccl_conf || true
	fi
}
trap on_exit EXIT

wait_for_driver() {
	begin "wait for the NVIDIA driver"
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
	begin "check docker and the NVIDIA container toolkit"
	command -v docker >/dev/null || { log "docker is not installed"; return 1; }
	command -v nvidia-container-cli >/dev/null || {
		log "the NVIDIA container toolkit is not installed (docker --gpus needs it)"
		return 1
	}
}

check_interfaces() {
	local nic
	for nic in ${INTERFACES}; do
		begin "find network interface ${nic}"
		[[ -e ${SYS_NET_DIR}/${nic} ]] || { log "no interface ${nic} on this node"; return 1; }
	done
}

# dlvm's settings, then those of the plugin's own profile script (if any) that dlvm does not
# set; NCCL takes the first line of a name.
write_nccl_conf() {
	local profile=${1:-}
	begin "write ${DLVM_NCCL_CONF}"
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

# A settings file and a library path of an earlier boot name a plugin that may not come up
# this time.
remove_old_nccl_conf() {
	if [[ -f ${DLVM_NCCL_CONF} ]] && [[ $(head -n 1 "${DLVM_NCCL_CONF}") == "${CONF_MARK}" ]]; then
		rm -f "${DLVM_NCCL_CONF}"
	fi
	if [[ -e ${LD_SO_CONF_DIR}/${LD_SO_CONF_NAME} ]]; then
		rm -f "${LD_SO_CONF_DIR}/${LD_SO_CONF_NAME}"
		ldconfig
	fi
}

# NCCL finds the plugin (libnccl-net.so) through the dynamic linker.
add_library_path() {
	begin "add ${LIB_DIR} to the dynamic linker's path"
	printf '%s\n' "${LIB_DIR}" >"${LD_SO_CONF_DIR}/${LD_SO_CONF_NAME}"
	ldconfig
}

start_rxdm() {
	begin "start the receive-data-path manager"
	docker rm --force "${RXDM_CONTAINER}" >/dev/null 2>&1 || true
	docker run --detach --name "${RXDM_CONTAINER}" --restart unless-stopped \
		--network host --privileged --cap-add NET_ADMIN --gpus all \
		"$@"
}

wait_for_rxdm() {
	local ready_line=$1 tries=0
	begin "wait for the receive-data-path manager"
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

# GPUDirect-TCPX needs Google's TCPX kernel (linux-gcp-tcpx) or Container-Optimized OS; on
# another kernel RxDM either exits or stays up doing nothing, and NCCL_NET naming the plugin
# then fails every job: such a node uses plain sockets.
require_tcpx_kernel() {
	begin "check for a GPUDirect-TCPX kernel"
	local release
	release=$(uname -r)
	[[ ${release} == *tcpx* ]] || {
		log "kernel ${release} is not one of Google's TCPX kernels (linux-gcp-tcpx): GPUDirect-TCPX cannot run here"
		return 1
	}
}

# The plugin and RxDM images, pulled and checked: what runs is repository@digest.
pull_images() {
	begin "pull and check the pinned images"
	plugin=$(pinned_image "${PLUGIN_IMAGE}" "${PLUGIN_EXPECTED}")
	rxdm=$(pinned_image "${RXDM_IMAGE}" "${RXDM_EXPECTED}")
}

setup_tcpx() {
	local plugin rxdm
	pull_images
	begin "install the GPUDirect-TCPX NCCL plugin"
	# With the NCCL core Google qualifies with this plugin.
	docker run --rm --network host --volume /var/lib:/var/lib "${plugin}" install --install-nccl
	mkdir -p "${UDS_PATH}" "${TOPOLOGY_DIR}"
	# Which GPU's receive queues sit on which NIC, named as this image names the NICs.
	local topology=${TOPOLOGY_DIR}/gpu_rxq_configuration.textproto
	printf '%s' "${RXQ_TOPOLOGY}" >"${topology}"
	start_rxdm --volume "${UDS_PATH}:${UDS_PATH}" \
		--volume "${topology}:${topology}:ro" \
		--entrypoint /tcpgpudmarxd/build/app/tcpgpudmarxd \
		"${rxdm}" \
		--gpu_nic_preset manual --gpu_nic_topology "${topology}" \
		--gpu_shmem_type fd --uds_path "${UDS_PATH}" \
		--setup_param "--verbose 128 2 0"
	wait_for_rxdm_sockets
}

# This RxDM release logs nothing when ready: it is ready when every socket through which the
# plugin reaches it (RXDM_SOCKETS, opened one after another as it sets up) accepts connections.
wait_for_rxdm_sockets() {
	local tries=0
	begin "wait for the receive-data-path manager's sockets"
	until net_probe --sockets "${UDS_PATH}" --expect "${RXDM_SOCKETS}" 2>/dev/null; do
		if [[ $(docker inspect --format '{{.State.Running}}' "${RXDM_CONTAINER}") != true ]] ||
			((tries += 1, tries > 90)); then
			docker logs --tail 20 "${RXDM_CONTAINER}" || true
			net_probe --sockets "${UDS_PATH}" --expect "${RXDM_SOCKETS}" || true
			return 1
		fi
		sleep 2
	done
}

# nccl_net_probe.py (NET_PROBE, set above this body) with these arguments.
net_probe() {
	python3 -S -I -c "${NET_PROBE}" "$@"
}

# What a job's NCCL will use, tried without a job, once the settings are written: the GPU
# NICs up, the plugin loading as NCCL loads it (every library it needs found) with the
# transport NCCL_NET names, and the receive-data-path manager answering.
verify_transport() {
	local nic net
	for nic in ${INTERFACES}; do
		begin "check that network interface ${nic} is up"
		[[ $(cat "${SYS_NET_DIR}/${nic}/operstate" 2>/dev/null) == up ]] || {
			log "interface ${nic} is not up"
			return 1
		}
	done
	begin "load the NCCL net plugin as NCCL will"
	net=$(sed -n 's/^NCCL_NET=//p' "${DLVM_NCCL_CONF}" | head -n 1)
	net_probe --plugin "${LIB_DIR}/libnccl-net.so" ${net:+--net "${net}"}
	begin "check the receive-data-path manager"
	[[ $(docker inspect --format '{{.State.Running}}' "${RXDM_CONTAINER}") == true ]] || {
		log "the receive-data-path manager is not running"
		return 1
	}
	case "${GPU_STACK}" in
	tcpx) net_probe --sockets "${UDS_PATH}" --expect "${RXDM_SOCKETS}" ;;
	tcpxo)
		[[ -e ${RXDM_HEALTH_DIR}/health-check ]] || {
			log "the receive-data-path manager wrote no health file: its initialization did not complete"
			return 1
		}
		;;
	esac
}

# Google's Artifact Registry apt transport (ar+https), through which its plugin packages come.
add_artifact_registry() {
	local keyring=${KEYRING_DIR}/dlvm-google-artifact-registry.gpg
	# Both keys are checked at every boot that gets here: a key replaced since is refused.
	pinned_apt_key "${AR_KEY_URL}" "${AR_KEY_EXPECTED}" "${keyring}"
	local google_keyring=${KEYRING_DIR}/dlvm-google-cloud.gpg
	pinned_apt_key "${CLOUD_KEY_URL}" "${CLOUD_KEY_EXPECTED}" "${google_keyring}"
	echo "deb [signed-by=${google_keyring}] ${CLOUD_APT} apt-transport-artifact-registry-stable main" \
		>"${APT_DIR}/sources.list.d/dlvm-artifact-registry-transport.list"
	apt-get update
	pinned_apt_package "${TRANSPORT_PACKAGE}" "${TRANSPORT_EXPECTED}"
}

# A repository of Google's gce-ai-infra project, by name (signed by the checked key).
add_ai_infra_repository() {
	local name=$1
	add_artifact_registry
	echo "deb [signed-by=${KEYRING_DIR}/dlvm-google-artifact-registry.gpg] ${AI_INFRA_APT} ${name} main" \
		>"${APT_DIR}/sources.list.d/dlvm-${name}.list"
	apt-get update
}

# The GPU NICs' PCIe apertures, which the TCPXO plugin maps through /dev/aperture_devices:
# read and written by the job's processes, which run as the SSH user, not root.
expose_apertures() {
	begin "expose the NICs' PCIe apertures"
	local bdf target
	mkdir -p "${APERTURE_DIR}"
	while read -r bdf _; do
		target=${APERTURE_DIR}/${bdf}
		mkdir -p "${target}"
		mountpoint -q "${target}" || mount --bind "$(readlink -f "/sys/bus/pci/devices/${bdf}")" "${target}"
		chmod 0666 "${target}"/resource*
	done < <(lspci -nn -D | grep '1ae0:0084')
}

# The dmabuf import helper: a kernel module (DKMS) from Google's TCPXO repository, which Deep
# Learning VM images do not carry.
load_import_helper() {
	if ! modinfo import-helper >/dev/null 2>&1; then
		begin "install the dmabuf import helper (DKMS)"
		add_ai_infra_repository gpudirect-tcpxo-apt
		pinned_apt_package "${DKMS_PACKAGE}" "${DKMS_EXPECTED}"
		# The running kernel's headers: the image's own apt sources, as its kernel came.
		DEBIAN_FRONTEND=noninteractive apt-get install --yes "linux-headers-$(uname -r)"
		build_import_helper
	fi
	begin "load the dmabuf import helper"
	modprobe import-helper
}

# Whether the running kernel is at least MAJOR.MINOR.
kernel_at_least() {
	local release major minor
	release=$(uname -r)
	IFS=. read -r major minor _ <<<"${release%%-*}"
	((major > $1 || (major == $1 && ${minor:-0} >= $2)))
}

# The helper's package is unpacked, not installed: its DKMS source is registered and built
# here, so that it can be fixed first. Since Linux 6.13 a module names a symbol namespace it
# imports as a string (MODULE_IMPORT_NS("DMA_BUF")); the packaged source names it bare and
# does not build on such kernels (Ubuntu's 6.14 and 6.17 kernels among them).
build_import_helper() {
	local work source version
	temp_dir work
	pinned_apt_download "${HELPER_PACKAGE}" "${HELPER_EXPECTED}" "${work}"
	dpkg-deb -x "${work}"/*.deb "${work}/root"
	for source in "${work}"/root/usr/src/dmabuf-import-helper-*; do :; done
	[[ -d ${source} ]] || { log "the package holds no DKMS source"; return 1; }
	version=${source##*-}
	if kernel_at_least 6 13; then
		begin "adapt the dmabuf import helper to kernel $(uname -r)"
		sed -i 's/MODULE_IMPORT_NS(DMA_BUF)/MODULE_IMPORT_NS("DMA_BUF")/' "${source}"/*.c
	fi
	begin "build the dmabuf import helper (DKMS)"
	dkms remove -m dmabuf-import-helper -v "${version}" --all >/dev/null 2>&1 || true
	rm -rf "${USR_SRC_DIR}/dmabuf-import-helper-${version}"
	mv "${source}" "${USR_SRC_DIR}/"
	dkms add -m dmabuf-import-helper -v "${version}"
	dkms build -m dmabuf-import-helper -v "${version}"
	dkms install -m dmabuf-import-helper -v "${version}"
	rm -rf "${work}"
}

setup_tcpxo() {
	local plugin rxdm
	load_import_helper
	expose_apertures
	pull_images
	begin "install the GPUDirect-TCPXO NCCL plugin"
	rm -rf "${LIB_DIR}"
	docker run --rm --network host --volume /var/lib:/var/lib "${plugin}" install --install-nccl
	mkdir -p "${RXDM_HEALTH_DIR}"
	rm -f "${RXDM_HEALTH_DIR}/health-check"
	# RxDM writes HEALTH_CHECK_LOG_FILE once its initialization completed, and only then.
	start_rxdm --volume /dev/dmabuf_import_helper:/dev/dmabuf_import_helper \
		--volume "${RXDM_HEALTH_DIR}:/run/dlvm-rxdm" \
		--env HEALTH_CHECK_LOG_FILE=/run/dlvm-rxdm/health-check \
		--env LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu \
		"${rxdm}" --num_hops=2
	wait_for_rxdm "Buffer manager initialization complete"
}

setup_gib() {
	begin "install the gIB NCCL plugin ${GIB_VERSION}"
	local installed
	installed=$(dpkg-query --showformat '${Version}' --show nccl-gib 2>/dev/null || true)
	if [[ ${installed} != "${GIB_VERSION}" ]]; then
		add_ai_infra_repository gpudirect-gib-apt
		apt-mark unhold nccl-gib >/dev/null 2>&1 || true
		pinned_apt_package "${GIB_PACKAGE}" "${GIB_EXPECTED}"
		# Held: an unattended upgrade must not move it away from the version dlvm pins.
		apt-mark hold nccl-gib
	fi
	# The RDMA user space: Google's accelerator images (these shapes' default) carry the
	# libraries (rdma-core) but not the tools, which Google's references add (ibverbs-utils);
	# another image may lack both.
	if ! ldconfig -p | grep -q 'libibverbs\.so\.1 '; then
		begin "install the RDMA libraries"
		pinned_apt_package "${RDMA_CORE_PACKAGE}" "${RDMA_CORE_EXPECTED}"
	fi
	if ! command -v ibv_devices >/dev/null; then
		begin "install the RDMA tools"
		pinned_apt_package "${IBVERBS_PACKAGE}" "${IBVERBS_EXPECTED}"
	fi
	begin "find the ${RDMA_NICS} RDMA devices"
	local found
	found=$(ibv_devices | grep -c mlx5 || true)
	((found >= RDMA_NICS)) || {
		log "ibv_devices lists ${found} mlx5 devices, ${RDMA_NICS} expected"
		return 1
	}
}

main() {
	mkdir -p "${STATE_DIR}"
	rm -f "${STATE_DIR}/ready" "${STATE_DIR}/failed" "${STATE_DIR}/step" "${STATE_DIR}/fallback"
	cat "${BOOT_ID_FILE}" >"${STATE_DIR}/boot"
	remove_old_nccl_conf
	check_interfaces
	wait_for_driver
	case "${GPU_STACK}" in
	tcpx)
		require_tcpx_kernel
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
		begin "choose the plugin"
		log "unknown GPU_STACK '${GPU_STACK}'"
		return 1
		;;
	esac
	add_library_path
	case "${GPU_STACK}" in
	tcpx | tcpxo) verify_transport ;;
	esac
	step=done
	rm -f "${STATE_DIR}/step"
	printf '%s %s\n' "${GPU_STACK}" "${PLUGIN_IMAGE:-nccl-gib=${GIB_VERSION:-}}" >"${STATE_DIR}/ready"
	log "ready (${GPU_STACK})"
}

# One line: `ready WHAT`, `failed STEP`, `running STEP`, or `waiting` (this boot's setup has not
# begun: what the folder holds is an earlier boot's).
probe() {
	trap - EXIT
	local boot
	boot=$(cat "${STATE_DIR}/boot" 2>/dev/null || true)
	if [[ -z ${boot} ]] || [[ ${boot} != "$(cat "${BOOT_ID_FILE}")" ]]; then
		echo waiting
	elif [[ -f ${STATE_DIR}/ready ]]; then
		echo "ready $(head -n 1 "${STATE_DIR}/ready")"
	elif [[ -f ${STATE_DIR}/failed ]]; then
		echo "failed $(head -n 1 "${STATE_DIR}/failed")"
	else
		echo "running $(head -n 1 "${STATE_DIR}/step" 2>/dev/null || true)"
	fi
}

# Another node's setup failed: this one gives up its plugin until its next boot.
fallback() {
	trap - EXIT
	mkdir -p "${STATE_DIR}"
	remove_old_nccl_conf
	printf '%s\n' "${1:-another node failed}" >"${STATE_DIR}/fallback"
	echo "plain NCCL"
}

case "${1:-}" in
probe) probe ;;
fallback) fallback "${2:-}" ;;
*) main ;;
esac
