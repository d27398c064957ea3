# Sourced by the setup and test scripts. A full disk otherwise fails deep inside pip or a test with
# "[Errno 28] No space left on device"; this stops first, with one message that says what to do.
need_free_space() {  # need_free_space MIB FOLDER WHAT
    local need_mib="$1" folder="$2" what="$3" free_mib
    free_mib="$(df -Pm "$folder" | awk 'NR == 2 { print $4 }')"
    if [ "$free_mib" -lt "$need_mib" ]; then
        echo "Not enough disk space for $what: it needs about $need_mib MiB in $folder, which has" \
            "$free_mib MiB free. Free some space (df -h \"$folder\") and run this again." >&2
        return 1
    fi
}
