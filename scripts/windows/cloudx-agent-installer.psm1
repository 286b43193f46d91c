#Requires -Version 5.1
<#
.SYNOPSIS
    Installs, configures, enrolls and starts the Cloud-X agent (the Wazuh agent) on a Windows host set up by hand.

.DESCRIPTION
    Does what the Ansible role cloudx_agent_windows does for the agent itself, with the same settings, the same
    validation and the same ossec.conf: installs the pinned MSI unattended (msiexec /qn) after checking its SHA-256,
    writes ossec.conf, writes the enrollment password to authd.pass (SYSTEM and Administrators only), enrolls the agent
    once (skipped while client.keys is not empty) and keeps the WazuhSvc service running and automatic.
    The audit policy, PowerShell logging and Sysmon are left to the role.

    The enrollment password is read from a file; it never goes on a command line (msiexec logs its properties).
    No certificate is imported or trusted: the download relies on the system's own HTTPS validation.

.EXAMPLE
    Import-Module .\cloudx-agent-installer.psm1
    Install-CloudXAgent -ManagerAddress wazuh.example.com -AgentGroup windows -EnrollmentPasswordFile C:\secure\authd.pass

.EXAMPLE
    Install-CloudXAgent -ManagerAddress 2001:db8::10 -PackagePath .\wazuh-agent-4.9.2-1.msi -Sha256 <64 hex digits>
#>

Set-StrictMode -Version 3.0

# Validation: the same expressions as roles/cloudx_agent_windows/vars/main.yml, matched case-sensitively (-cmatch).
$script:NamePattern = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'
$script:HostnamePattern = '^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$'
$script:Ipv4Pattern = '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
$script:Ipv6Pattern = '^(([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|([0-9A-Fa-f]{1,4}:){1,7}:|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}|:((:[0-9A-Fa-f]{1,4}){1,7}|:))$'
$script:VersionPattern = '^[0-9]+\.[0-9]+\.[0-9]+$'
$script:Sha256Pattern = '^[0-9A-Fa-f]{64}$'

$script:ServiceName = 'WazuhSvc'
$script:ProductName = 'Wazuh Agent'
$script:DefaultInstallDir = 'C:\Program Files (x86)\ossec-agent'
# Well-known SIDs (any display language): LocalSystem and BUILTIN\Administrators.
$script:SecretReaders = @('S-1-5-18', 'S-1-5-32-544')

function Test-CloudXManagerAddress {
    [CmdletBinding()]
    [OutputType([bool])]
    param (
        [AllowEmptyString()]
        [String]$Address
    )
    if ([String]::IsNullOrEmpty($Address) -or $Address.Length -gt 253 -or $Address -match '\s') {
        return $false
    }
    return ($Address -cmatch $script:HostnamePattern) -or ($Address -cmatch $script:Ipv4Pattern) -or ($Address -cmatch $script:Ipv6Pattern)
}

function Test-CloudXName {
    [CmdletBinding()]
    [OutputType([bool])]
    param (
        [AllowEmptyString()]
        [String]$Name
    )
    return (-not [String]::IsNullOrEmpty($Name)) -and ($Name -notmatch '\s') -and ($Name -cmatch $script:NamePattern)
}

function Test-CloudXOwnDirectory {
    # A directory the tools may delete: absolute, not a drive root, not a system directory, no '..'.
    [CmdletBinding()]
    [OutputType([bool])]
    param (
        [String]$Path
    )
    if ($Path -notmatch '^[A-Za-z]:\\[^\\/:*?"<>|]+(\\[^\\/:*?"<>|]+)*$' -or $Path -match '\\\.\.?(\\|$)') {
        return $false
    }
    $normalized = $Path.TrimEnd('\').ToLowerInvariant()
    $system = @('c:\windows', 'c:\windows\system32', 'c:\windows\temp', 'c:\program files', 'c:\program files (x86)',
        'c:\programdata', 'c:\users')
    return -not ($system -contains $normalized)
}

function Assert-CloudXSetting {
    [CmdletBinding()]
    param (
        [bool]$Condition,
        [String]$Message
    )
    if (-not $Condition) {
        throw [System.ArgumentException]::new($Message)
    }
}

function Get-CloudXInstalledAgent {
    # The installed agent's MSI product code and version, from the uninstall registry keys.
    [CmdletBinding()]
    param ()
    $keys = @(
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\*',
        'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\*'
    )
    $found = Get-ItemProperty -Path $keys -ErrorAction SilentlyContinue |
        Where-Object { $_.PSObject.Properties['DisplayName'] -and $_.DisplayName -eq $script:ProductName } |
        Select-Object -First 1
    if (-not $found) {
        return $null
    }
    $displayVersion = ''
    if ($found.PSObject.Properties['DisplayVersion']) {
        $displayVersion = [String]$found.DisplayVersion
    }
    $version = ($displayVersion -replace '^v', '') -split '-'
    return [PSCustomObject]@{ ProductCode = [String]$found.PSChildName; Version = $version[0] }
}

function ConvertTo-CloudXXmlText {
    [CmdletBinding()]
    [OutputType([String])]
    param (
        [String]$Value
    )
    return [System.Security.SecurityElement]::Escape($Value)
}

function New-CloudXOssecConf {
    # The same document as roles/cloudx_agent_windows/templates/Program Files (x86)/ossec-agent/ossec.conf.j2
    # with the role's defaults (PowerShell logging on, no Sysmon, no extra channels).
    [CmdletBinding()]
    [OutputType([String])]
    param (
        [String]$ManagerAddress,
        [int]$ManagerPort,
        [int]$EnrollmentPort,
        [String]$AgentName,
        [String]$AgentGroup,
        [bool]$WithPassword
    )
    $manager = ConvertTo-CloudXXmlText $ManagerAddress
    $name = ConvertTo-CloudXXmlText $AgentName
    $group = ConvertTo-CloudXXmlText $AgentGroup
    $passPath = ''
    if ($WithPassword) {
        $passPath = "`r`n      <authorization_pass_path>authd.pass</authorization_pass_path>"
    }
    $securityQuery = 'Event/System[EventID != 5145 and EventID != 5156 and EventID != 5447 and EventID != 4656 and EventID != 4658 and EventID != 4663 and EventID != 4660 and EventID != 4670 and EventID != 4690 and EventID != 4703 and EventID != 4907 and EventID != 5152 and EventID != 5157]'
    $sysNativeRestrict = 'at.exe$|attrib.exe$|cacls.exe$|cmd.exe$|eventcreate.exe$|ftp.exe$|lsass.exe$|net.exe$|net1.exe$|netsh.exe$|reg.exe$|regedt32.exe$|regsvr32.exe$|runas.exe$|sc.exe$|schtasks.exe$|sethc.exe$|subst.exe$|winrm.vbs$'
    $registry = @(
        'Software\Classes\batfile', 'Software\Classes\cmdfile', 'Software\Classes\comfile', 'Software\Classes\exefile',
        'Software\Classes\piffile', 'Software\Classes\AllFilesystemObjects', 'Software\Classes\Directory',
        'Software\Classes\Folder', 'Software\Classes\Protocols', 'Software\Policies', 'Security',
        'System\CurrentControlSet\Services', 'System\CurrentControlSet\Control\Session Manager\KnownDLLs',
        'System\CurrentControlSet\Control\SecurePipeServers\winreg', 'Software\Microsoft\Windows\CurrentVersion\Run',
        'Software\Microsoft\Windows\CurrentVersion\RunOnce', 'Software\Microsoft\Windows\CurrentVersion\RunOnceEx',
        'Software\Microsoft\Windows\CurrentVersion\Policies', 'Software\Microsoft\Windows NT\CurrentVersion\Winlogon',
        'Software\Microsoft\Active Setup\Installed Components'
    )
    $registryLines = ($registry | ForEach-Object {
            "    <windows_registry arch=`"both`">HKEY_LOCAL_MACHINE\$_</windows_registry>"
        }) -join "`r`n"
    $lines = @"
<!--
  Wazuh agent configuration for the Cloud-X agent on Windows.
  Written by scripts/windows/cloudx-agent-installer.psm1 (the same as the Ansible role cloudx_agent_windows).
-->
<ossec_config>
  <client>
    <server>
      <address>$manager</address>
      <port>$ManagerPort</port>
      <protocol>tcp</protocol>
    </server>
    <config-profile>windows</config-profile>
    <crypto_method>aes</crypto_method>
    <notify_time>10</notify_time>
    <time-reconnect>60</time-reconnect>
    <auto_restart>yes</auto_restart>
    <enrollment>
      <enabled>yes</enabled>
      <manager_address>$manager</manager_address>
      <port>$EnrollmentPort</port>
      <agent_name>$name</agent_name>
      <groups>$group</groups>$passPath
    </enrollment>
  </client>

  <client_buffer>
    <disabled>no</disabled>
    <queue_size>5000</queue_size>
    <events_per_second>500</events_per_second>
  </client_buffer>

  <!-- Event channels -->
  <localfile>
    <location>Application</location>
    <log_format>eventchannel</log_format>
  </localfile>

  <localfile>
    <location>Security</location>
    <log_format>eventchannel</log_format>
    <query>$securityQuery</query>
  </localfile>

  <localfile>
    <location>System</location>
    <log_format>eventchannel</log_format>
  </localfile>

  <localfile>
    <location>Microsoft-Windows-PowerShell/Operational</location>
    <log_format>eventchannel</log_format>
  </localfile>

  <localfile>
    <location>active-response\active-responses.log</location>
    <log_format>syslog</log_format>
  </localfile>

  <!-- Policy monitoring -->
  <rootcheck>
    <disabled>no</disabled>
    <windows_apps>./shared/win_applications_rcl.txt</windows_apps>
    <windows_malware>./shared/win_malware_rcl.txt</windows_malware>
  </rootcheck>

  <sca>
    <enabled>yes</enabled>
    <scan_on_start>yes</scan_on_start>
    <interval>12h</interval>
    <skip_nfs>yes</skip_nfs>
  </sca>

  <!-- System inventory -->
  <wodle name="syscollector">
    <disabled>no</disabled>
    <interval>1h</interval>
    <scan_on_start>yes</scan_on_start>
    <hardware>yes</hardware>
    <os>yes</os>
    <network>yes</network>
    <packages>yes</packages>
    <ports all="no">yes</ports>
    <processes>yes</processes>
    <hotfixes>yes</hotfixes>
    <synchronization>
      <max_eps>10</max_eps>
    </synchronization>
  </wodle>

  <!-- File and registry integrity monitoring -->
  <syscheck>
    <disabled>no</disabled>
    <frequency>43200</frequency>
    <scan_on_start>yes</scan_on_start>
    <directories recursion_level="0" restrict="regedit.exe`$|system.ini`$|win.ini`$">%WINDIR%</directories>
    <directories recursion_level="0" restrict="$sysNativeRestrict">%WINDIR%\SysNative</directories>
    <directories recursion_level="0">%WINDIR%\SysNative\drivers\etc</directories>
    <directories recursion_level="0" restrict="WMIC.exe`$">%WINDIR%\SysNative\wbem</directories>
    <directories recursion_level="0" restrict="powershell.exe`$">%WINDIR%\SysNative\WindowsPowerShell\v1.0</directories>
    <directories realtime="yes">%PROGRAMDATA%\Microsoft\Windows\Start Menu\Programs\Startup</directories>
    <ignore type="sregex">.log`$|.htm`$|.jpg`$|.png`$|.chm`$|.pnf`$|.evtx`$</ignore>
$registryLines
    <registry_ignore>HKEY_LOCAL_MACHINE\Security\Policy\Secrets</registry_ignore>
    <registry_ignore>HKEY_LOCAL_MACHINE\Security\SAM\Domains\Account\Users</registry_ignore>
    <registry_ignore type="sregex">\Enum`$</registry_ignore>
    <registry_ignore>HKEY_LOCAL_MACHINE\System\CurrentControlSet\Services\MpKslDrv</registry_ignore>
    <registry_ignore>HKEY_LOCAL_MACHINE\System\CurrentControlSet\Services\ADOVMPPackage\Final</registry_ignore>
    <windows_audit_interval>60</windows_audit_interval>
    <process_priority>10</process_priority>
    <max_eps>50</max_eps>
    <synchronization>
      <enabled>yes</enabled>
      <interval>5m</interval>
      <max_eps>10</max_eps>
    </synchronization>
  </syscheck>

  <active-response>
    <disabled>no</disabled>
  </active-response>

  <logging>
    <log_format>plain</log_format>
  </logging>
</ossec_config>
"@
    # Here-strings take the script file's line endings; Windows tools expect CRLF.
    return (($lines -split "`r?`n") -join "`r`n") + "`r`n"
}

function Set-CloudXSecretAcl {
    # Only SYSTEM and Administrators, nothing inherited.
    [CmdletBinding()]
    param (
        [String]$Path
    )
    $acl = Get-Acl -LiteralPath $Path
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($rule in @($acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier]))) {
        [void]$acl.RemoveAccessRuleSpecific($rule)
    }
    foreach ($sid in $script:SecretReaders) {
        $identity = New-Object System.Security.Principal.SecurityIdentifier($sid)
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($identity, 'FullControl', 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function Write-CloudXFile {
    # Writes UTF-8 without a byte order mark; returns $true when the content changed.
    [CmdletBinding()]
    [OutputType([bool])]
    param (
        [String]$Path,
        [String]$Content
    )
    if ((Test-Path -LiteralPath $Path -PathType Leaf) -and ([System.IO.File]::ReadAllText($Path) -ceq $Content)) {
        return $false
    }
    [System.IO.File]::WriteAllText($Path, $Content, (New-Object System.Text.UTF8Encoding($false)))
    return $true
}

function Install-CloudXAgent {
    <#
    .SYNOPSIS
        Installs (or upgrades to) the pinned Wazuh agent MSI, configures, enrolls and starts it as the Cloud-X agent.
    .PARAMETER ManagerAddress
        Wazuh manager: a hostname, an IPv4 address or an IPv6 address (no brackets, no port, no whitespace).
    .PARAMETER AgentName
        Agent name on the manager (^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$); the computer name by default.
    .PARAMETER AgentGroup
        Agent group, one, existing on the manager (same pattern).
    .PARAMETER EnrollmentPasswordFile
        A file holding the enrollment password on one line. Without it, an existing authd.pass is removed.
    .PARAMETER Version
        Pinned agent version, X.Y.Z. Another installed version is upgraded in place.
    .PARAMETER PackagePath
        A local MSI; requires -Sha256. Without it the vendor MSI for -Version is downloaded over HTTPS.
    .PARAMETER Sha256
        SHA-256 of the MSI (64 hex digits), checked with Get-FileHash before msiexec runs.
    #>
    [CmdletBinding(SupportsShouldProcess = $true)]
    param (
        [Parameter(Mandatory = $true)]
        [AllowEmptyString()]
        [String]$ManagerAddress,

        [String]$AgentName = $env:COMPUTERNAME,

        [String]$AgentGroup = 'default',

        [String]$EnrollmentPasswordFile,

        [String]$Version = '4.9.2',

        [String]$Revision = '1',

        [String]$PackagePath,

        [String]$Sha256,

        [int]$ManagerPort = 1514,

        [int]$EnrollmentPort = 1515,

        [String]$InstallDir = $script:DefaultInstallDir
    )

    $ErrorActionPreference = 'Stop'

    # Settings first, before anything changes: the same checks and messages as the role.
    Assert-CloudXSetting (Test-CloudXManagerAddress $ManagerAddress) (
        "-ManagerAddress is required and must be a hostname, an IPv4 address or an IPv6 address " +
        "(no brackets, no port, no whitespace); got '$ManagerAddress'.")
    Assert-CloudXSetting (Test-CloudXName $AgentName) "-AgentName must match $($script:NamePattern); got '$AgentName'."
    Assert-CloudXSetting (Test-CloudXName $AgentGroup) "-AgentGroup must match $($script:NamePattern) (one group); got '$AgentGroup'."
    Assert-CloudXSetting ($ManagerPort -ge 1 -and $ManagerPort -le 65535) "-ManagerPort must be 1-65535; got $ManagerPort."
    Assert-CloudXSetting ($EnrollmentPort -ge 1 -and $EnrollmentPort -le 65535) "-EnrollmentPort must be 1-65535; got $EnrollmentPort."
    Assert-CloudXSetting ($Version -cmatch $script:VersionPattern) "-Version must be a pinned version such as 4.9.2; got '$Version'."
    Assert-CloudXSetting ($Revision -cmatch '^[0-9]{1,4}$') "-Revision must be a number; got '$Revision'."
    Assert-CloudXSetting (Test-CloudXOwnDirectory $InstallDir) "-InstallDir must be an absolute directory of its own; got '$InstallDir'."
    if ($Sha256) {
        Assert-CloudXSetting ($Sha256 -cmatch $script:Sha256Pattern) '-Sha256 must be 64 hex digits.'
    }
    if ($PackagePath) {
        Assert-CloudXSetting ([bool]$Sha256) '-PackagePath needs -Sha256.'
        Assert-CloudXSetting (Test-Path -LiteralPath $PackagePath -PathType Leaf) "-PackagePath $PackagePath is not a file."
    }
    $password = $null
    if ($EnrollmentPasswordFile) {
        Assert-CloudXSetting (Test-Path -LiteralPath $EnrollmentPasswordFile -PathType Leaf) (
            "-EnrollmentPasswordFile $EnrollmentPasswordFile is not a file.")
        $password = ([System.IO.File]::ReadAllText((Resolve-Path -LiteralPath $EnrollmentPasswordFile).ProviderPath)).TrimEnd([char[]]"`r`n")
        Assert-CloudXSetting ($password.Length -gt 0 -and $password -notmatch '[\r\n]') (
            '-EnrollmentPasswordFile must hold the password on a single line.')
    }

    $principal = New-Object System.Security.Principal.WindowsPrincipal([System.Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run Install-CloudXAgent from an elevated (Administrator) PowerShell.'
    }

    $changed = $false
    $installed = Get-CloudXInstalledAgent
    if ($installed -and $installed.Version -eq $Version) {
        Write-Verbose "The Wazuh agent $Version is already installed."
    }
    elseif ($PSCmdlet.ShouldProcess($env:COMPUTERNAME, "Install the Wazuh agent $Version")) {
        $staging = Join-Path $env:SystemRoot 'Temp\cloudx-agent'
        New-Item -ItemType Directory -Path $staging -Force | Out-Null
        try {
            $msi = Join-Path $staging "wazuh-agent-$Version.msi"
            if ($PackagePath) {
                Copy-Item -LiteralPath $PackagePath -Destination $msi -Force
            }
            else {
                $major = $Version.Split('.')[0]
                # The vendor's download site (Wazuh's installation guide) or a mirror; there is no built-in default.
                $site = $env:CLOUDX_VENDOR_SITE
                if (-not $site -or $site -notmatch '^https://[A-Za-z0-9.-]+(:[0-9]+)?$') {
                    throw 'Set CLOUDX_VENDOR_SITE to https://<vendor download site> or give -PackagePath.'
                }
                $url = "$site/$major.x/windows/wazuh-agent-$Version-$Revision.msi"
                [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
                Write-Verbose "Downloading $url"
                Invoke-WebRequest -Uri $url -OutFile $msi -UseBasicParsing
                if (-not $Sha256) {
                    Write-Warning 'No -Sha256 given: the MSI is only protected by HTTPS.'
                }
            }
            if ($Sha256) {
                $actual = (Get-FileHash -LiteralPath $msi -Algorithm SHA256).Hash
                if ($actual -ne $Sha256) {
                    throw "The MSI does not match -Sha256 (its SHA-256 is $actual)."
                }
            }
            # Everything but the password, which never goes on a command line.
            $log = Join-Path $staging 'wazuh-agent-install.log'
            $arguments = @(
                '/i', "`"$msi`"", '/qn', '/norestart', '/l*v', "`"$log`"",
                "APPLICATIONFOLDER=`"$InstallDir`"",
                "WAZUH_MANAGER=`"$ManagerAddress`"", "WAZUH_MANAGER_PORT=`"$ManagerPort`"",
                "WAZUH_REGISTRATION_SERVER=`"$ManagerAddress`"", "WAZUH_REGISTRATION_PORT=`"$EnrollmentPort`"",
                "WAZUH_AGENT_NAME=`"$AgentName`"", "WAZUH_AGENT_GROUP=`"$AgentGroup`""
            ) -join ' '
            $msiexec = Join-Path $env:SystemRoot 'System32\msiexec.exe'
            $process = Start-Process -FilePath $msiexec -ArgumentList $arguments -Wait -PassThru
            if ($process.ExitCode -eq 3010) {
                Write-Warning 'The agent installer asked for a reboot (3010); the agent runs, but reboot when convenient.'
            }
            elseif ($process.ExitCode -ne 0) {
                throw "msiexec failed with exit code $($process.ExitCode); see $log."
            }
            $changed = $true
        }
        finally {
            # Kept after a failure, for the msiexec log.
            if ($changed) {
                Remove-Item -LiteralPath $staging -Recurse -Force -ErrorAction SilentlyContinue
            }
        }
    }

    $ossecConf = Join-Path $InstallDir 'ossec.conf'
    $authdPass = Join-Path $InstallDir 'authd.pass'
    $clientKeys = Join-Path $InstallDir 'client.keys'
    $agentAuth = Join-Path $InstallDir 'agent-auth.exe'
    if (-not (Test-Path -LiteralPath $InstallDir -PathType Container)) {
        if ($WhatIfPreference) {
            return
        }
        throw "$InstallDir is missing: the MSI did not install the agent there."
    }

    $conf = New-CloudXOssecConf -ManagerAddress $ManagerAddress -ManagerPort $ManagerPort -EnrollmentPort $EnrollmentPort `
        -AgentName $AgentName -AgentGroup $AgentGroup -WithPassword ([bool]$password)
    if ($PSCmdlet.ShouldProcess($ossecConf, 'Write the agent configuration')) {
        if (Write-CloudXFile -Path $ossecConf -Content $conf) {
            $changed = $true
        }
    }

    if ($password) {
        if ($PSCmdlet.ShouldProcess($authdPass, 'Write the enrollment password (SYSTEM and Administrators only)')) {
            # Locked down while still empty, then filled.
            if (-not (Test-Path -LiteralPath $authdPass -PathType Leaf)) {
                New-Item -ItemType File -Path $authdPass | Out-Null
            }
            Set-CloudXSecretAcl -Path $authdPass
            if (Write-CloudXFile -Path $authdPass -Content $password) {
                $changed = $true
            }
        }
    }
    elseif (Test-Path -LiteralPath $authdPass) {
        if ($PSCmdlet.ShouldProcess($authdPass, 'Remove the previous enrollment password')) {
            Remove-Item -LiteralPath $authdPass -Force
            $changed = $true
        }
    }

    # Enrollment happens once; agent-auth reads authd.pass by itself. Empty client.keys to enroll again.
    $keys = Get-Item -LiteralPath $clientKeys -ErrorAction SilentlyContinue
    if ((-not $keys -or $keys.Length -eq 0) -and $PSCmdlet.ShouldProcess($ManagerAddress, "Enroll $AgentName (group $AgentGroup)")) {
        Push-Location -LiteralPath $InstallDir
        try {
            & $agentAuth -m $ManagerAddress -p $EnrollmentPort -A $AgentName -G $AgentGroup
            if ($LASTEXITCODE -ne 0) {
                throw "Enrollment failed (agent-auth exit code $LASTEXITCODE): is ${ManagerAddress}:$EnrollmentPort reachable, the group defined, the password right?"
            }
        }
        finally {
            Pop-Location
        }
        $changed = $true
    }

    if ($PSCmdlet.ShouldProcess($script:ServiceName, 'Start the agent service and start it at boot')) {
        Set-Service -Name $script:ServiceName -StartupType Automatic
        $service = Get-Service -Name $script:ServiceName
        if ($service.Status -ne 'Running') {
            Start-Service -Name $script:ServiceName
        }
        elseif ($changed) {
            Restart-Service -Name $script:ServiceName
        }
    }
    Write-Output "The Cloud-X agent is configured and running on $env:COMPUTERNAME."
}

Export-ModuleMember -Function @('Install-CloudXAgent', 'Test-CloudXManagerAddress', 'Test-CloudXName')
