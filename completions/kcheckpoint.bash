# bash completion for kcheckpoint; the binary itself lists commands and
# options (`kcheckpoint __complete [CMD]`), so this never goes stale.
_kcheckpoint_files() { # $1: -f or -d; file names may hold spaces
	local IFS=$'\n'
	COMPREPLY=($(compgen "$1" -- "$cur"))
	compopt -o filenames 2>/dev/null
}
_kcheckpoint() {
	local cur prev cmd opt kind
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	# --opt=value: bash splits it at '=' (COMP_WORDBREAKS)
	if [ "$cur" = "=" ]; then
		prev=${COMP_WORDS[COMP_CWORD-1]}
		cur=
	elif [ "$prev" = "=" ] && [ "$COMP_CWORD" -ge 2 ]; then
		prev=${COMP_WORDS[COMP_CWORD-2]}
	fi
	# and at ':' (zstd:3): the option is the word before the value
	local k=$COMP_CWORD
	while [ "$k" -ge 2 ] && { [ "${COMP_WORDS[k-1]}" = ":" ] || [ "${COMP_WORDS[k]}" = ":" ]; }; do
		k=$((k - 2))
		[ "${COMP_WORDS[k]}" = "=" ] && k=$((k - 1))
		prev=${COMP_WORDS[k-1]}
	done
	COMPREPLY=()
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "$(kcheckpoint __complete 2>/dev/null)" -- "$cur"))
		return
	fi
	cmd=${COMP_WORDS[1]}
	local opts=() kinds=()
	while IFS=$'\t' read -r opt kind _; do
		opts+=("$opt")
		kinds+=("$kind")
	done < <(kcheckpoint __complete "$cmd" 2>/dev/null)
	local i
	for i in "${!opts[@]}"; do
		if [ "${opts[$i]}" = "$prev" ]; then
			case ${kinds[$i]} in
			flag) ;;
			file) _kcheckpoint_files -f; return ;;
			dir) _kcheckpoint_files -d; return ;;
			arg) return ;;
			*)
				# values hold ':' (zstd:3), a word break of bash's: match
				# the whole value, hand back only what follows the last ':'
				local line=${COMP_LINE:0:COMP_POINT} val
				val=${line##*[[:space:]=]}
				COMPREPLY=($(compgen -W "${kinds[$i]}" -- "$val"))
				if [[ $val == *:* ]]; then
					COMPREPLY=("${COMPREPLY[@]#"${val%:*}:"}")
				fi
				return
				;;
			esac
		fi
	done
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "${opts[*]}" -- "$cur"))
		return
	fi
	case $cmd in
	# every process of the machine, not only this terminal's
	dump | state | recover) COMPREPLY=($(compgen -W "$(ps -e -o pid= 2>/dev/null)" -- "$cur")) ;;
	restore | inspect) _kcheckpoint_files -f ;;
	esac
}
complete -F _kcheckpoint kcheckpoint
