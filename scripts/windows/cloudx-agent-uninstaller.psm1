#Requires -Version 5.1
<#
.SYNOPSIS
    Removes the Cloud-X agent (the Wazuh agent) from a Windows host, unattended with -Force.

.DESCRIPTION
    Does what the Ansible role cloudx_agent_windows does with cloudx_agent_windows_state=absent: stops the WazuhSvc
    service, uninstalls the MSI by its product code (msiexec /x /qn), removes the install directory with its
    configuration, keys and logs and, with -RemoveSysmon, uninstalls Sysmon.

    Without -Force it asks for confirmation (ConfirmImpact High); -WhatIf shows what it would do.

.EXAMPLE
    Import-Module .\cloudx-agent-uninstaller.psm1
    Uninstall-CloudXAgent -Force
#>

Set-StrictMode -Version 3.0

$script:ServiceName = 'WazuhSvc'
$script:ProductName = 'Wazuh Agent'
$script:DefaultInstallDir = 'C:\Program Files (x86)\ossec-agent'
$script:SysmonExe = 'C:\Windows\Sysmon64.exe'
$script:DefaultSysmonDir = 'C:\Program Files\CloudX\Sysmon'

function Test-CloudXOwnDirectory {
    # A directory this module may delete: absolute, not a drive root, not a system directory, no '..'.
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

function Uninstall-CloudXAgent {
    <#
    .SYNOPSIS
        Uninstalls the Cloud-X agent (Wazuh agent) and removes its directory.
    .PARAMETER Force
        Do not ask for confirmation (unattended removal).
    .PARAMETER RemoveSysmon
        Also uninstall Sysmon (Sysmon64.exe -u force) and remove -SysmonDir.
    .PARAMETER InstallDir
        The agent's install directory, removed after the MSI.
    #>
    [CmdletBinding(SupportsShouldProcess = $true, ConfirmImpact = 'High')]
    param (
        [switch]$Force,

        [switch]$RemoveSysmon,

        [String]$InstallDir = $script:DefaultInstallDir,

        [String]$SysmonDir = $script:DefaultSysmonDir
    )

    $ErrorActionPreference = 'Stop'
    if (-not (Test-CloudXOwnDirectory $InstallDir)) {
        throw [System.ArgumentException]::new("-InstallDir must be an absolute directory of its own; got '$InstallDir'.")
    }
    if ($RemoveSysmon -and -not (Test-CloudXOwnDirectory $SysmonDir)) {
        throw [System.ArgumentException]::new("-SysmonDir must be an absolute directory of its own; got '$SysmonDir'.")
    }
    if ($Force -and -not $PSBoundParameters.ContainsKey('Confirm')) {
        $ConfirmPreference = 'None'
    }

    $principal = New-Object System.Security.Principal.WindowsPrincipal([System.Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run Uninstall-CloudXAgent from an elevated (Administrator) PowerShell.'
    }

    $installed = Get-CloudXInstalledAgent
    $what = 'Uninstall the Cloud-X agent (Wazuh agent) and delete ' + $InstallDir
    if (-not $PSCmdlet.ShouldProcess($env:COMPUTERNAME, $what)) {
        return
    }

    $service = Get-Service -Name $script:ServiceName -ErrorAction SilentlyContinue
    if ($service -and $service.Status -ne 'Stopped') {
        Stop-Service -Name $script:ServiceName -Force
    }
    if ($installed) {
        $msiexec = Join-Path $env:SystemRoot 'System32\msiexec.exe'
        $arguments = "/x $($installed.ProductCode) /qn /norestart"
        $process = Start-Process -FilePath $msiexec -ArgumentList $arguments -Wait -PassThru
        # 1605: the product is not installed (any more).
        if ($process.ExitCode -eq 3010) {
            Write-Warning 'Windows asks for a reboot to finish removing the agent.'
        }
        elseif ($process.ExitCode -ne 0 -and $process.ExitCode -ne 1605) {
            throw "msiexec /x failed with exit code $($process.ExitCode)."
        }
    }
    if (Test-Path -LiteralPath $InstallDir) {
        Remove-Item -LiteralPath $InstallDir -Recurse -Force
    }

    if ($RemoveSysmon) {
        if (Test-Path -LiteralPath $script:SysmonExe -PathType Leaf) {
            & $script:SysmonExe -u force
            if ($LASTEXITCODE -ne 0) {
                throw "Sysmon64.exe -u failed with exit code $LASTEXITCODE."
            }
        }
        if (Test-Path -LiteralPath $SysmonDir) {
            Remove-Item -LiteralPath $SysmonDir -Recurse -Force
        }
    }
    Write-Output "The Cloud-X agent has been removed from $env:COMPUTERNAME."
}

Export-ModuleMember -Function @('Uninstall-CloudXAgent')
